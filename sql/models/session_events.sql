/* Activity events in sessions: a session is a run of one user's activity events with no gap longer than the session timeout. Grain: one row per activity event, in the partition of its session's date (the local date of the session's first event). */
with

-- The users a scoped build rebuilds (every user otherwise).
scope as (
    select user_id from meta.build_scope where model_name = :model_name
),

-- Through the day after the range: a session that starts on the last date can run past midnight.
events as (
    select
        event_id,
        source_name,
        load_date,
        event_name,
        user_id,
        event_time,
        event_date
    from models.stg_events
    where is_activity
        and event_date between cast(:start_date as date) and cast(:end_date as date) + 1
        and (not cast(:scoped as boolean) or user_id in (select scope.user_id from scope))
),

-- Whether the first events of the range continue a session only depends on each user's
-- latest earlier event. Two days back reach it whenever it is within the timeout (at most
-- 1440 minutes; a local day can be 23 hours long at a DST change); older ones are farther.
latest_before as (
    select
        user_id,
        max(event_time) as event_time
    from models.stg_events
    where is_activity
        and event_date between cast(:start_date as date) - 2 and cast(:start_date as date) - 1
        and (not cast(:scoped as boolean) or user_id in (select scope.user_id from scope))
    group by user_id
),

user_streams as (
    select
        event_id,
        source_name,
        load_date,
        event_name,
        user_id,
        event_time,
        event_date
    from events
    union all
    select
        cast(null as varchar) as event_id,
        cast(null as varchar) as source_name,
        cast(null as date) as load_date,
        cast(null as varchar) as event_name,
        user_id,
        event_time,
        cast(null as date) as event_date
    from latest_before
),

-- Each user's events in time order, ties by event_id (byte order on every engine), then source and load date: ids
-- are unique per source and lookback only, and (source_name, load_date, event_id) is unique, so the order is total
-- and a night and a full rebuild number the events alike.
neighbours as (
    select
        event_id,
        event_name,
        user_id,
        event_time,
        event_date,
        row_number() over user_events as user_event_number,
        lag(event_time) over user_events as previous_event_time,
        lead(event_time) over user_events as next_event_time,
        lead(event_name) over user_events as following_event_name
    from user_streams
    window user_events as (
        partition by user_id
        order by event_time, event_id collate "C", source_name collate "C", load_date
    )
),

-- "No gap longer than the timeout": a gap of exactly the timeout continues the session.
flagged as (
    select
        event_id,
        event_name,
        user_id,
        event_time,
        event_date,
        user_event_number,
        following_event_name,
        coalesce(
            event_time > previous_event_time + interval '1 minute' * :session_timeout_minutes, true
        ) as is_session_start,
        coalesce(
            next_event_time > event_time + interval '1 minute' * :session_timeout_minutes, true
        ) as is_last_event
    from neighbours
),

-- Every event carries the number of its session's first event (the latest start so far).
numbered as (
    select
        flagged.*,
        max(case when is_session_start then user_event_number end) over (
            partition by user_id
            order by user_event_number
            rows between unbounded preceding and current row
        ) as session_first_number
    from flagged
),

-- Sessions of the range; the earlier user stream only decided where they start.
session_starts as (
    select
        user_id,
        user_event_number as session_first_number,
        -- Event ids are unique per source and lookback only: the time (epoch milliseconds) keeps two sessions
        -- of one user that start with copies of one id apart (two copies at one millisecond share a session).
        md5(
            user_id || '|' || event_id || '|'
            || cast(cast(extract(epoch from event_time) * 1000 as bigint) as varchar)
        ) as session_id,
        event_date as session_date
    from numbered
    where is_session_start
        and event_date between cast(:start_date as date) and cast(:end_date as date)
),

final as (
    select
        session_starts.session_date,
        session_starts.session_id,
        numbered.user_id,
        numbered.event_id,
        numbered.event_name,
        numbered.event_time,
        numbered.user_event_number - session_starts.session_first_number + 1 as event_number,
        case when numbered.is_last_event then null else numbered.following_event_name end as next_event_name,
        numbered.is_last_event
    from numbered
    inner join session_starts
        on numbered.user_id = session_starts.user_id
        and numbered.session_first_number = session_starts.session_first_number
)

select * from final

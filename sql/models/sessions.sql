/* Sessions: one user's run of activity events with no gap longer than the session timeout, with its span and first and last events. Grain: one row per session, partitioned by session_date (the local date of its first event). */
with

-- The users a scoped build rebuilds (every user otherwise).
scope as (
    select user_id from meta.build_scope where model_name = :model_name
),

session_events as (
    select
        session_date,
        session_id,
        user_id,
        event_name,
        event_time,
        event_number,
        is_last_event
    from models.session_events
    where session_date between cast(:start_date as date) and cast(:end_date as date)
        and (not cast(:scoped as boolean) or user_id in (select scope.user_id from scope))
),

final as (
    select
        session_id,
        user_id,
        session_date,
        min(event_time) as started_at,
        max(event_time) as ended_at,
        round(cast(date_diff('millisecond', min(event_time), max(event_time)) as double) / 1000, 3) as duration_seconds,
        count(*) as count_events,
        max(case when event_number = 1 then event_name end) as first_event,
        max(case when is_last_event then event_name end) as last_event
    from session_events
    group by session_id, user_id, session_date
)

select * from final

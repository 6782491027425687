/* Path transitions per day: within each session's path (from the first occurrence of the configured start event, or from the session start), every event to the next one, the last to the '$end' marker, with its step number. Grain: one row per session_date, step_number, from_event and to_event. */
with

-- No row: paths start at the session start.
path_settings as (
    select start_event from meta.def_paths
),

session_events as (
    select
        session_date,
        session_id,
        user_id,
        event_name,
        event_number,
        next_event_name
    from models.session_events
    where session_date between cast(:start_date as date) and cast(:end_date as date)
),

-- The first occurrence of the start event opens the path; events before it are not part of it.
path_starts as (
    select
        session_id,
        min(event_number) as start_number
    from session_events
    where event_name in (select path_settings.start_event from path_settings)
        or (event_number = 1 and not exists (select 1 from path_settings))
    group by session_id
),

path_events as (
    select
        session_events.session_date,
        session_events.user_id,
        session_events.event_number - path_starts.start_number + 1 as step_number,
        session_events.event_name as from_event,
        coalesce(session_events.next_event_name, '$end') as to_event
    from session_events
    inner join path_starts
        on session_events.session_id = path_starts.session_id
        and session_events.event_number >= path_starts.start_number
),

final as (
    select
        session_date,
        step_number,
        from_event,
        to_event,
        count(*) as transition_count,
        count(distinct user_id) as count_users
    from path_events
    group by session_date, step_number, from_event, to_event
)

select * from final

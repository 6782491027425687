/* Path transitions per day: within each session's path (from the first occurrence of the configured start event, or from the session start), every event to the next one, the last to the '$end' marker, with its step number. Grain: one row per session_date, step_number, from_event and to_event. */
{% import 'macros/paths.sql' as paths %}
with

{{ paths.path_start_ctes(['next_event_name']) }},

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

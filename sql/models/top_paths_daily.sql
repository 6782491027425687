/* Top paths per day: the most frequent sequences of up to max_steps events from the path start (the first occurrence of the configured start event, or the session start), ' > '-joined, ending in ' > $end' when the session ended within them. Grain: one row per session_date and path_rank (rank <= top_n). */
{% import 'macros/paths.sql' as paths %}
with

{{ paths.path_start_ctes(['is_last_event']) }},

path_steps as (
    select
        session_events.session_date,
        session_events.session_id,
        session_events.user_id,
        session_events.event_name,
        session_events.is_last_event,
        session_events.event_number - path_starts.start_number + 1 as step_number
    from session_events
    inner join path_starts
        on session_events.session_id = path_starts.session_id
        and session_events.event_number >= path_starts.start_number
        and session_events.event_number < path_starts.start_number + :path_max_steps
),

session_paths as (
    select
        session_date,
        session_id,
        user_id,
        string_agg(event_name, ' > ' order by step_number)
        || case when bool_or(is_last_event) then ' > $end' else '' end as path,
        count(*) as path_length
    from path_steps
    group by session_date, session_id, user_id
),

path_counts as (
    select
        session_date,
        path,
        path_length,
        count(*) as count_sessions,
        count(distinct user_id) as count_users
    from session_paths
    group by session_date, path, path_length
),

-- Ties: more sessions, then more users, then the path in byte order.
ranked as (
    select
        path_counts.*,
        row_number() over (
            partition by session_date
            order by count_sessions desc, count_users desc, path collate "C"
        ) as path_rank
    from path_counts
),

final as (
    select
        session_date,
        path_rank,
        path,
        path_length,
        count_sessions,
        count_users
    from ranked
    where path_rank <= :path_top_n
)

select * from final

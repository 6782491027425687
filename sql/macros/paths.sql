{#- The start of each session's path, shared by the path models: the sessions of [start_date, end_date] and, per
    session, the event number its path starts at. `columns` are the extra columns of models.session_events the
    model reads. -#}
{% macro path_start_ctes(columns) -%}
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
        {{ columns | join(",\n        ") }}
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
)
{%- endmacro %}

/* Session metrics per day: sessions, users, average duration, events per session and bounce rate. Grain: one row per session_date (every date of the range, empty days included). */
{% import 'macros/dates.sql' as dates %}
with

calendar as (
    {{ dates.range_dates('session_date') | indent(4) }}
),

sessions as (
    select
        session_date,
        user_id,
        duration_seconds,
        count_events
    from models.sessions
    where session_date between cast(:start_date as date) and cast(:end_date as date)
),

daily as (
    select
        session_date,
        count(*) as sessions,
        count(distinct user_id) as users,
        avg(duration_seconds) as avg_duration_seconds,
        avg(cast(count_events as double)) as avg_events_per_session,
        cast(count(*) filter (where count_events = 1) as double) / count(*) as bounce_rate
    from sessions
    group by session_date
),

final as (
    select
        calendar.session_date,
        coalesce(daily.sessions, 0) as sessions,
        coalesce(daily.users, 0) as users,
        round(cast(coalesce(daily.avg_duration_seconds, 0.0) as double), 6) as avg_duration_seconds,
        round(cast(coalesce(daily.avg_events_per_session, 0.0) as double), 6) as avg_events_per_session,
        round(cast(coalesce(daily.bounce_rate, 0.0) as double), 6) as bounce_rate
    from calendar
    left join daily
        on calendar.session_date = daily.session_date
)

select * from final

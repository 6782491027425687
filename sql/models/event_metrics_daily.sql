/* Event metrics per day and event name: event count and distinct users, activity and bookkeeping events alike. Grain: one row per event_date and event_name. */
with

events as (
    select
        event_date,
        event_name,
        user_id,
        is_activity
    from models.stg_events
    where event_date between cast(:start_date as date) and cast(:end_date as date)
),

final as (
    select
        event_date,
        event_name,
        bool_or(is_activity) as is_activity,
        count(*) as count_events,
        count(distinct user_id) as count_users
    from events
    group by event_date, event_name
)

select * from final

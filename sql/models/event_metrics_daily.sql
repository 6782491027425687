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

-- Each user's events per date and name first, then the date's and name's: two aggregations by hash where a
-- count(distinct) had PostgreSQL sort every event by date and name (946,532 demo events). A null user_id (none is
-- loaded) would make a group of its own here that count(user_id) leaves out, as count(distinct) does.
user_events as (
    select
        event_date,
        event_name,
        user_id,
        bool_or(is_activity) as is_activity,
        count(*) as count_events
    from events
    group by event_date, event_name, user_id
),

final as (
    select
        event_date,
        event_name,
        bool_or(is_activity) as is_activity,
        cast(sum(count_events) as bigint) as count_events,
        count(user_id) as count_users
    from user_events
    group by event_date, event_name
)

select * from final

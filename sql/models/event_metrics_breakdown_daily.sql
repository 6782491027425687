/* Event metrics per day and event name broken down by platform, app version or channel (those listed in analyses.breakdowns): event count and distinct users, activity and bookkeeping events alike. Grain: one row per event_date, event_name, breakdown and breakdown_value. */
with

events as (
    select
        event_date,
        event_name,
        user_id,
        platform,
        app_version,
        channel
    from models.stg_events
    where event_date between cast(:start_date as date) and cast(:end_date as date)
),

breakdowns as (
    select breakdown from meta.def_event_breakdowns
),

-- One row per event and configured breakdown; a missing value is the '(none)' bucket.
event_values as (
    select
        events.event_date,
        events.event_name,
        events.user_id,
        breakdowns.breakdown,
        coalesce(
            case breakdowns.breakdown
                when 'platform' then events.platform
                when 'app_version' then events.app_version
                when 'channel' then events.channel
            end,
            '(none)'
        ) as breakdown_value
    from events
    cross join breakdowns
),

final as (
    select
        event_date,
        event_name,
        breakdown,
        breakdown_value,
        count(*) as count_events,
        count(distinct user_id) as count_users
    from event_values
    group by event_date, event_name, breakdown, breakdown_value
)

select * from final

/* Staged events: every loaded event with its resolved user_id (links applied retroactively). Grain: one row per copy of an event that counts: (source_name, load_date, event_id) is unique (deduplication works per source and within the lookback, so an event_id alone can repeat). */
with

events as (
    select * from raw.events
),

identities as (
    select * from models.stg_identities
),

final as (
    select
        events.event_id,
        events.event_name,
        events.distinct_id,
        coalesce(identities.login_id, events.distinct_id) as user_id,
        events.event_time,
        events.event_date,
        events.received_at,
        events.source_format,
        events.app_id,
        events.platform,
        events.app_version,
        events.channel,
        events.session_id,
        events.properties,
        events.is_activity,
        events.load_date,
        events.source_name
    from events
    left join identities
        on events.distinct_id = identities.anonymous_id
)

select * from final

/* Activity days: who was active on each local date (at least one activity event; identity and profile bookkeeping events do not count), under the resolved user_id. The models that need a user's activity history (first-ever active date, DAU/WAU/MAU, lifecycle, first-time cohorts, segments) read this instead of every event: a night rebuilds only the dates its new data and new identity links change. Grain: one row per activity_date and user_id. */
with

-- The users a scoped build rebuilds (every user otherwise).
scope as (
    select user_id from meta.build_scope where model_name = :model_name
),

activity_events as (
    select
        event_date,
        user_id
    from models.stg_events
    where is_activity
        and event_date between cast(:start_date as date) and cast(:end_date as date)
        and (not cast(:scoped as boolean) or user_id in (select scope.user_id from scope))
),

final as (
    select
        event_date as activity_date,
        user_id,
        count(*) as activity_events
    from activity_events
    group by
        event_date,
        user_id
)

select * from final

/* Lifecycle of active users per date: new, returning, resurrecting and dormant users, from activity events only. Grain: one row per activity_date and lifecycle_state. */
{% import 'macros/dates.sql' as dates %}
with

calendar as (
    {{ dates.range_dates('activity_date') | indent(4) }}
),

states as (
    select 'new' as lifecycle_state
    union all
    select 'returning' as lifecycle_state
    union all
    select 'resurrecting' as lifecycle_state
    union all
    select 'dormant' as lifecycle_state
),

activity_days as (
    select
        user_id,
        activity_date
    from models.user_activity_daily
    where activity_date <= cast(:end_date as date)
),

-- The first-ever active date over all history, never a profile creation time.
first_active as (
    select
        user_id,
        min(activity_date) as first_date
    from activity_days
    group by user_id
),

recent_days as (
    select
        user_id,
        activity_date
    from activity_days
    where activity_date >= cast(:start_date as date) - 1
),

-- One row per user and date D where the user is active on D or on D - 1.
day_pairs as (
    select
        coalesce(today.user_id, yesterday.user_id) as user_id,
        coalesce(today.activity_date, yesterday.activity_date + 1) as activity_date,
        today.user_id is not null as is_active,
        yesterday.user_id is not null as was_active
    from recent_days as today
    full outer join recent_days as yesterday
        on today.user_id = yesterday.user_id
        and today.activity_date = yesterday.activity_date + 1
),

user_states as (
    select
        day_pairs.activity_date,
        case
            when not day_pairs.is_active then 'dormant'
            when first_active.first_date = day_pairs.activity_date then 'new'
            when day_pairs.was_active then 'returning'
            else 'resurrecting'
        end as lifecycle_state
    from day_pairs
    inner join first_active
        on first_active.user_id = day_pairs.user_id
    where day_pairs.activity_date between cast(:start_date as date) and cast(:end_date as date)
),

state_counts as (
    select
        activity_date,
        lifecycle_state,
        count(*) as users
    from user_states
    group by
        activity_date,
        lifecycle_state
),

final as (
    select
        calendar.activity_date,
        states.lifecycle_state,
        coalesce(state_counts.users, 0) as users
    from calendar
    cross join states
    left join state_counts
        on state_counts.activity_date = calendar.activity_date
        and state_counts.lifecycle_state = states.lifecycle_state
)

select * from final

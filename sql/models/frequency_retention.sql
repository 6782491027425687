/* The "magic number": users by how many times they did an event in their first days, and how many of them were active again in a later target window. Only users whose both windows have ended by the build's end date (the business date) are counted. Grain: one row per frequency_name, cohort_week (null on the overall rows) and frequency_bucket. */
with

definitions as (
    select
        frequency_name,
        event_name,
        first_days,
        target_from_day,
        target_to_day,
        frequency_cap,
        -- the last day either window reaches, counted from d0
        greatest(first_days - 1, target_to_day) as window_days
    from meta.def_frequency_retention
),

-- Only the events a definition counts.
events as (
    select
        user_id,
        event_name,
        event_date
    from models.stg_events
    where event_date <= cast(:as_of_date as date)
        and one_of(event_name, (select definitions.event_name from definitions))
),

activity_days as (
    select
        user_id,
        activity_date as event_date
    from models.user_activity_daily
    where activity_date <= cast(:as_of_date as date)
),

-- d0: the first-ever active date of each user, over all history.
first_active as (
    select
        user_id,
        min(event_date) as first_date
    from activity_days
    group by user_id
),

-- The users counted by each definition, with the definition's windows and cap.
complete_users as (
    select
        definitions.frequency_name,
        first_active.user_id,
        first_active.first_date,
        first_active.first_date - cast(extract(isodow from first_active.first_date) as integer) + 1 as cohort_week,
        definitions.event_name,
        definitions.first_days,
        definitions.target_from_day,
        definitions.target_to_day,
        definitions.frequency_cap
    from first_active
    cross join definitions
    where first_active.first_date + definitions.window_days <= cast(:as_of_date as date)
),

event_counts as (
    select
        complete_users.frequency_name,
        complete_users.user_id,
        count(*) as count_events
    from complete_users
    inner join events
        on events.user_id = complete_users.user_id
        and events.event_name = complete_users.event_name
        and events.event_date >= complete_users.first_date
        and events.event_date < complete_users.first_date + complete_users.first_days
    group by
        complete_users.frequency_name,
        complete_users.user_id
),

retained_users as (
    select distinct
        complete_users.frequency_name,
        complete_users.user_id
    from complete_users
    inner join activity_days
        on activity_days.user_id = complete_users.user_id
        and activity_days.event_date between complete_users.first_date + complete_users.target_from_day
        and complete_users.first_date + complete_users.target_to_day
),

user_buckets as (
    select
        complete_users.frequency_name,
        complete_users.cohort_week,
        least(coalesce(event_counts.count_events, 0), complete_users.frequency_cap) as frequency_min,
        case when retained_users.user_id is null then 0 else 1 end as is_retained
    from complete_users
    left join event_counts
        on event_counts.frequency_name = complete_users.frequency_name
        and event_counts.user_id = complete_users.user_id
    left join retained_users
        on retained_users.frequency_name = complete_users.frequency_name
        and retained_users.user_id = complete_users.user_id
),

{#- The same counts per cohort week and over every week. #}
{%- for name, is_overall in [('by_week', false), ('overall', true)] %}

{{ name }} as (
    select
        frequency_name,
        {{ 'cast(null as date) as cohort_week' if is_overall else 'cohort_week' }},
        {{ is_overall | lower }} as is_overall,
        frequency_min,
        count(*) as users,
        sum(is_retained) as retained_users
    from user_buckets
    group by
        frequency_name,
        {%- if not is_overall %}
        cohort_week,
        {%- endif %}
        frequency_min
),
{%- endfor %}

buckets as (
    select * from by_week
    union all
    select * from overall
),

final as (
    select
        buckets.frequency_name,
        buckets.cohort_week,
        buckets.is_overall,
        case
            when buckets.frequency_min >= definitions.frequency_cap
                then cast(definitions.frequency_cap as varchar) || '+'
            else cast(buckets.frequency_min as varchar)
        end as frequency_bucket,
        cast(buckets.frequency_min as bigint) as frequency_min,
        cast(buckets.users as bigint) as users,
        cast(buckets.retained_users as bigint) as retained_users,
        cast(buckets.retained_users as double) / buckets.users as retention_rate,
        -- a week is complete once its last day's windows have ended; the overall rows never are (new cohorts keep coming)
        coalesce(
            buckets.cohort_week + 6 + definitions.window_days + cast(:late_arrival_days as integer) <= cast(:as_of_date as date), false
        ) as is_complete,
        definitions.event_name,
        definitions.first_days,
        definitions.target_from_day,
        definitions.target_to_day,
        cast(:as_of_date as date) as as_of_date
    from buckets
    inner join definitions
        on definitions.frequency_name = buckets.frequency_name
)

select * from final

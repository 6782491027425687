/* Retention cohorts as of the as-of date (the latest business date loaded), from the users' cohorts and returns (retention_user_cohorts): per definition, cohort period and period number k, the cohort's users and those retained in period k (mode on: returned in period k; on_or_after: returned in any period >= k loaded so far), and whether the row is final. Grain: one row per retention_name, cohort_date, breakdown_value and period_number, for the periods begun by the as-of date. */
{% import 'macros/keys.sql' as keys %}
with

definitions as (
    select
        retention_name,
        period,
        horizon,
        retention_mode
    from meta.def_retention
),

user_cohorts as (
    select
        retention_name,
        cohort_date,
        user_id,
        breakdown_value,
        first_number,
        last_number
    from models.retention_user_cohorts
    where cohort_date between cast(:start_date as date) and cast(:end_date as date)
),

member_returns as (
    select * from user_cohorts where first_number >= 1
),

members as (
    select * from user_cohorts where first_number = 0
),

return_counts as (
    select
        retention_name,
        cohort_date,
        breakdown_value,
        first_number,
        last_number,
        count(*) as count_users
    from member_returns
    group by
        retention_name,
        cohort_date,
        breakdown_value,
        first_number,
        last_number
),

cohorts as (
    select
        retention_name,
        cohort_date,
        breakdown_value,
        count(*) as cohort_users
    from members
    group by
        retention_name,
        cohort_date,
        breakdown_value
),

period_numbers as (
    select cast(period_number as integer) as period_number
    from generate_series(0, 401) as numbers(period_number)
),

grid as (
    select
        cohorts.retention_name,
        cohorts.cohort_date,
        definitions.period,
        cohorts.breakdown_value,
        period_numbers.period_number,
        cohorts.cohort_users,
        case definitions.period
            when 'day' then cohorts.cohort_date + period_numbers.period_number
            when 'week' then cohorts.cohort_date + 7 * period_numbers.period_number
            else cast(cohorts.cohort_date + period_numbers.period_number * interval '1 month' as date)
        end as period_start_date,
        case definitions.period
            when 'day' then cohorts.cohort_date + (period_numbers.period_number + 1)
            when 'week' then cohorts.cohort_date + 7 * (period_numbers.period_number + 1)
            else cast(cohorts.cohort_date + (period_numbers.period_number + 1) * interval '1 month' as date)
        end as next_period_date
    from cohorts
    inner join definitions
        on definitions.retention_name = cohorts.retention_name
    inner join period_numbers
        on period_numbers.period_number <= definitions.horizon
),

{%- set retained_keys = [
    'retention_name', 'cohort_date', 'period', 'breakdown_value', 'period_number', 'period_start_date',
    'next_period_date', 'cohort_users',
] %}
retained as (
    select
        {{ keys.qualified('grid', retained_keys) | indent(8) }},
        case
            when grid.period_number = 0 then grid.cohort_users
            else coalesce(sum(return_counts.count_users), 0)
        end as retained_users
    from grid
    left join return_counts
        on {{ keys.equal_keys('return_counts', 'grid', ['retention_name', 'cohort_date', 'breakdown_value']) | indent(8) }}
        and grid.period_number between return_counts.first_number and return_counts.last_number
    where grid.period_start_date <= cast(:as_of_date as date)
    group by
        {{ keys.qualified('grid', retained_keys) | indent(8) }}
),

final as (
    select
        retained.retention_name,
        retained.cohort_date,
        retained.period,
        retained.breakdown_value,
        retained.period_number,
        retained.period_start_date,
        retained.cohort_users,
        retained.retained_users,
        cast(retained.retained_users as double) / retained.cohort_users as retention_rate,
        -- Final once the period and the late-arrival window after it have passed; in mode on_or_after a return in
        -- any later period still raises retained_users of k >= 1, so only period 0 becomes final.
        retained.next_period_date + cast(:late_arrival_days as integer) <= cast(:as_of_date as date) + 1
            and (retained.period_number = 0 or definitions.retention_mode = 'on') as is_complete
    from retained
    inner join definitions
        on definitions.retention_name = retained.retention_name
)

select * from final

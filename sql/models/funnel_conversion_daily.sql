/* Funnel conversion per funnel, entry date E, breakdown value and step k, from the users' levels (funnel_user_steps): the users who entered (a step-1 event on E) and who reached step k, conversions, the median and 90th percentile time to convert, and whether the row is final. Grain: one row per funnel_name, entry_date, breakdown_value and step_index. */
{% import 'macros/keys.sql' as keys %}
{% import 'macros/dates.sql' as dates %}
with

funnels as (
    select * from meta.def_funnels
),

steps as (
    select * from meta.def_funnel_steps
),

deadlines as (
    select * from meta.def_funnel_deadlines
),

calendar as (
    {{ dates.range_dates('entry_date') | indent(4) }}
),

user_steps as (
    select
        funnel_no,
        entry_date,
        user_id,
        step_index,
        ms_to_convert,
        breakdown_value
    from models.funnel_user_steps
    where entry_date between cast(:start_date as date) and cast(:end_date as date)
),

-- Every row of user_steps is an entry's (a user, E and step k <= level): the 'all' counts need no join.
step_counts as (
    select
        funnel_no,
        entry_date,
        'all' as breakdown_value,
        step_index,
        count(*) as reached_users,
        quantile_cont(cast(ms_to_convert as double) / 1000.0, 0.5) as median_seconds,
        quantile_cont(cast(ms_to_convert as double) / 1000.0, 0.9) as p90_seconds
    from user_steps
    group by
        funnel_no,
        entry_date,
        step_index
    union all
    select
        funnel_no,
        entry_date,
        breakdown_value,
        step_index,
        count(*) as reached_users,
        quantile_cont(cast(ms_to_convert as double) / 1000.0, 0.5) as median_seconds,
        quantile_cont(cast(ms_to_convert as double) / 1000.0, 0.9) as p90_seconds
    from user_steps
    where breakdown_value is not null
    group by
        funnel_no,
        entry_date,
        breakdown_value,
        step_index
),

-- Every funnel, date and step has an 'all' row (zeros on a day nobody entered); breakdown rows where users entered.
grid as (
    select
        funnels.funnel_no,
        calendar.entry_date,
        'all' as breakdown_value
    from funnels
    cross join calendar
    union
    select
        funnel_no,
        entry_date,
        breakdown_value
    from step_counts
),

final as (
    select
        funnels.funnel_name,
        grid.entry_date,
        grid.breakdown_value,
        steps.step_index,
        steps.event_name as step_event,
        coalesce(entered.reached_users, 0) as entered_users,
        coalesce(reached.reached_users, 0) as reached_users,
        case
            when coalesce(entered.reached_users, 0) > 0
                then round(cast(coalesce(reached.reached_users, 0) as double) / entered.reached_users, 6)
        end as conversion_from_first,
        case
            when steps.step_index = 1 and coalesce(entered.reached_users, 0) > 0
                then round(cast(coalesce(reached.reached_users, 0) as double) / entered.reached_users, 6)
            when steps.step_index > 1 and coalesce(previous.reached_users, 0) > 0
                then round(cast(coalesce(reached.reached_users, 0) as double) / previous.reached_users, 6)
        end as conversion_from_previous,
        case when steps.step_index > 1 then round(reached.median_seconds, 6) end as median_seconds_to_convert,
        case when steps.step_index > 1 then round(reached.p90_seconds, 6) end as p90_seconds_to_convert,
        cast(:as_of_date as date)
            >= grid.entry_date + coalesce(deadlines.window_days, funnels.deadline_days) + cast(:late_arrival_days as integer)
            as is_complete
    from grid
    inner join funnels
        on funnels.funnel_no = grid.funnel_no
    inner join steps
        on steps.funnel_no = grid.funnel_no
    left join step_counts as entered
        on {{ keys.equal_keys('entered', 'grid', ['funnel_no', 'entry_date', 'breakdown_value']) | indent(8) }}
        and entered.step_index = 1
    left join step_counts as reached
        on {{ keys.equal_keys('reached', 'grid', ['funnel_no', 'entry_date', 'breakdown_value']) | indent(8) }}
        and reached.step_index = steps.step_index
    left join step_counts as previous
        on {{ keys.equal_keys('previous', 'grid', ['funnel_no', 'entry_date', 'breakdown_value']) | indent(8) }}
        and previous.step_index = steps.step_index - 1
    left join deadlines
        on deadlines.funnel_no = grid.funnel_no
        and deadlines.entry_date = grid.entry_date
)

select * from final

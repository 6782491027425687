/* Retention per user, the user-grain step of retention_cohorts: for each definition, each cohort a user belongs to (first_time: the period of their first-ever start event; recurring: every period with a start event), with each breakdown value ('all' and the user's value), a row for the membership (period numbers 0 to 0) and rows for the periods k >= 1 the user counts as retained in (mode on: one row per return period; on_or_after: one row 1 to the last period returned, capped at the horizon). A build can take some users only: the users whose events changed, all their cohorts. Grain: one row per retention_name, cohort_date, user_id, breakdown_value and period range. */
{% import 'macros/filters.sql' as filters %}
{% import 'macros/segments.sql' as segments %}
{#- The first date of the period (`period`: day, week or month) that `date` is in. Calendar periods: the Monday of the
    ISO week, the first of the month. -#}
{% macro period_start(period, date) -%}
{%- if period == 'day' -%}
{{ date }}
{%- elif period == 'week' -%}
{{ date }} - cast(extract(isodow from {{ date }}) as integer) + 1
{%- else -%}
{{ date }} - cast(extract(day from {{ date }}) as integer) + 1
{%- endif -%}
{%- endmacro %}
{#- The same, for a period named by the column `period_column`. -#}
{% macro period_start_of(period_column, date) -%}
case {{ period_column }}
    when 'day' then {{ period_start('day', date) }}
    when 'week' then {{ period_start('week', date) }}
    else {{ period_start('month', date) }}
end
{%- endmacro %}
with

definitions as (
    select
        retention_name,
        start_event,
        return_event,
        period,
        horizon,
        cohort_type,
        retention_mode,
        breakdown,
        segment_name,
        breakdown_segment
    from meta.def_retention
),

filters as (
    select
        retention_name,
        side,
        filter_no,
        property,
        op,
        value_kind,
        value_text,
        value_number,
        is_negated
    from meta.def_retention_filters
),

sides as (
    select
        retention_name,
        'start' as side,
        start_event as event_name,
        breakdown
    from definitions
    union all
    select
        retention_name,
        'return' as side,
        return_event as event_name,
        cast(null as varchar) as breakdown
    from definitions
),

-- A side that is "any activity" with no filter and no breakdown only needs the user's active days,
-- computed once from distinct (user, date) pairs; the others look at each event.
side_kinds as (
    select
        sides.retention_name,
        sides.side,
        definitions.period,
        sides.event_name,
        sides.breakdown,
        (
            sides.event_name is null
            and sides.breakdown is null
            and not exists (
                select 1
                from filters
                where filters.retention_name = sides.retention_name
                    and filters.side = sides.side
            )
        ) as is_plain_activity
    from sides
    inner join definitions
        on definitions.retention_name = sides.retention_name
),

-- The users a scoped build rebuilds (every user otherwise).
scope as (
    select user_id from meta.build_scope where model_name = :model_name
),

activity_days as (
    select
        user_id,
        activity_date as event_date
    from models.user_activity_daily
    where not cast(:scoped as boolean) or user_id in (select scope.user_id from scope)
),

-- Event-level rows for the sides that need them: the named event, or any activity event for a side with filters
-- or a breakdown. Both are equi-joins so that nothing is scanned when no side needs events.
event_sides as (
    select
        retention_name,
        side,
        breakdown,
        event_name,
        event_name is null as is_any_activity
    from side_kinds
    where not is_plain_activity
),

{#- One branch per join condition: a join on "one or the other" plans badly. The named events are also a filter
    (one_of: on PostgreSQL a check in the scan of the events, before the view's identity join). #}
candidates as (
    {%- for join, side_filter in [
        ('events.event_name = event_sides.event_name', 'and one_of(events.event_name, (select named.event_name from event_sides as named))'),
        ('events.is_activity = event_sides.is_any_activity', 'and event_sides.is_any_activity'),
    ] %}
    {%- if not loop.first %}
    union all
    {%- endif %}
    select
        event_sides.retention_name,
        event_sides.side,
        event_sides.breakdown,
        events.event_id,
        events.source_name,
        events.load_date,
        events.user_id,
        events.event_time,
        events.event_date,
        events.platform,
        events.app_version,
        events.channel,
        events.properties
    from models.stg_events as events
    inner join event_sides
        on {{ join }}
    where (not cast(:scoped as boolean) or events.user_id in (select scope.user_id from scope))
    {%- if side_filter %}
        {{ side_filter }}
    {%- endif %}
    {%- endfor %}
),

-- The candidate events with each filter of their side (materialized: each property read out of the JSON once, not
-- at each use of property_value).
filter_inputs as materialized (
    select
        candidates.retention_name,
        candidates.side,
        candidates.event_id,
        candidates.source_name,
        candidates.load_date,
        {{ filters.filter_input_columns('filters', 'candidates') | indent(8) }}
    from candidates
    inner join filters
        on filters.retention_name = candidates.retention_name
        and filters.side = candidates.side
),

-- Per event and filter: does any listed value match? The events failing a filter of theirs.
{{ filters.failed_filter_ctes(['retention_name', 'side'] + filters.event_key, 'filter_inputs', 'failed_events') }},

matched_events as (
    select candidates.*
    from candidates
    where {{ filters.passes_filters('candidates', 'failed_events', ['retention_name', 'side'] + filters.event_key) | indent(4) }}
),

-- The active periods of each user for the plain sides, once per period type in use.
-- Calendar periods: the Monday of the ISO week, the first of the month.
plain_periods as (
    {%- for period in ['day', 'week', 'month'] %}
    {%- if not loop.first %}
    union all
    {%- endif %}
    {#- (active days are distinct already) #}
    select{{ ' distinct' if period != 'day' }}
        '{{ period }}' as period,
        user_id,
        {{ period_start(period, 'event_date') }} as period_date
    from activity_days
    where exists (select 1 from side_kinds where side_kinds.is_plain_activity and side_kinds.period = '{{ period }}')
    {%- endfor %}
),

matched_periods as (
    select distinct
        matched_events.retention_name,
        matched_events.side,
        matched_events.user_id,
        {{ period_start_of('definitions.period', 'matched_events.event_date') | indent(8) }} as period_date
    from matched_events
    inner join definitions
        on definitions.retention_name = matched_events.retention_name
),

side_period_dates as (
    select
        side_kinds.retention_name,
        side_kinds.side,
        plain_periods.user_id,
        plain_periods.period_date
    from plain_periods
    inner join side_kinds
        on side_kinds.period = plain_periods.period
    where side_kinds.is_plain_activity
    union all
    select
        retention_name,
        side,
        user_id,
        period_date
    from matched_periods
),

-- A running number per period, so that k is a subtraction; 1970-01-05 is a Monday.
side_periods as (
    select
        side_period_dates.retention_name,
        side_period_dates.side,
        side_period_dates.user_id,
        side_period_dates.period_date,
        case definitions.period
            when 'day' then cast(side_period_dates.period_date - date '1970-01-05' as bigint)
            when 'week' then cast((side_period_dates.period_date - date '1970-01-05') / 7 as bigint)
            else cast(extract(year from side_period_dates.period_date) as bigint) * 12
                + cast(extract(month from side_period_dates.period_date) as bigint)
        end as period_index
    from side_period_dates
    inner join definitions
        on definitions.retention_name = side_period_dates.retention_name
),

start_periods as (
    select * from side_periods where side = 'start'
),

return_periods as (
    select * from side_periods where side = 'return'
),

-- first_time: the period of the first-ever start event (all history up to the as-of date).
first_time_members as (
    select
        start_periods.retention_name,
        start_periods.user_id,
        min(start_periods.period_date) as cohort_date,
        min(start_periods.period_index) as cohort_index
    from start_periods
    inner join definitions
        on definitions.retention_name = start_periods.retention_name
    where definitions.cohort_type = 'first_time'
    group by
        start_periods.retention_name,
        start_periods.user_id
),

cohort_members as (
    select
        retention_name,
        user_id,
        cohort_date,
        cohort_index
    from first_time_members
    where cohort_date between cast(:start_date as date) and cast(:end_date as date)
    union all
    select
        start_periods.retention_name,
        start_periods.user_id,
        start_periods.period_date as cohort_date,
        start_periods.period_index as cohort_index
    from start_periods
    inner join definitions
        on definitions.retention_name = start_periods.retention_name
    where definitions.cohort_type = 'recurring'
        and start_periods.period_date between cast(:start_date as date) and cast(:end_date as date)
),

segment_members as (
    select
        cohort_members.retention_name,
        cohort_members.user_id,
        cohort_members.cohort_date,
        cohort_members.cohort_index
    from cohort_members
    inner join definitions
        on definitions.retention_name = cohort_members.retention_name
    {{ segments.membership_join('membership', 'definitions.segment_name', 'cohort_members.cohort_date', 'cohort_members.user_id') | indent(4) }}
    where definitions.segment_name is null
        or membership.user_id is not null
),

breakdown_events as (
    select
        matched_events.retention_name,
        matched_events.user_id,
        matched_events.event_time,
        matched_events.event_id,
        matched_events.source_name,
        matched_events.load_date,
        {{ period_start_of('definitions.period', 'matched_events.event_date') | indent(8) }} as period_date,
        {{ filters.property_value('matched_events', 'matched_events.breakdown') | indent(8) }} as breakdown_value
    from matched_events
    inner join definitions
        on definitions.retention_name = matched_events.retention_name
    where matched_events.side = 'start'
        and matched_events.breakdown is not null
),

-- The breakdown value is the property on the user's earliest start event of the cohort period (ties: the smallest
-- event_id, source and load date, which name one event).
first_breakdowns as (
    select
        retention_name,
        user_id,
        period_date,
        breakdown_value,
        row_number() over (
            partition by retention_name, user_id, period_date
            order by event_time, event_id collate "C", source_name collate "C", load_date
        ) as event_rank
    from breakdown_events
),

members as (
    select
        retention_name,
        user_id,
        cohort_date,
        cohort_index,
        'all' as breakdown_value
    from segment_members
    union all
    select
        segment_members.retention_name,
        segment_members.user_id,
        segment_members.cohort_date,
        segment_members.cohort_index,
        coalesce(first_breakdowns.breakdown_value, '(none)') as breakdown_value
    from segment_members
    inner join first_breakdowns
        on first_breakdowns.retention_name = segment_members.retention_name
        and first_breakdowns.user_id = segment_members.user_id
        and first_breakdowns.period_date = segment_members.cohort_date
        and first_breakdowns.event_rank = 1
    union all
    -- Membership of the breakdown segment on the cohort date.
    {{ segments.breakdown_segment_rows('segment_members', ['retention_name', 'user_id', 'cohort_date', 'cohort_index'], 'definitions', 'retention_name', 'cohort_date', 'membership') | indent(4) }}
),

last_returns as (
    select
        retention_name,
        user_id,
        max(period_index) as last_index
    from return_periods
    group by
        retention_name,
        user_id
),

-- The period numbers each member counts as retained in, as a range [first_number, last_number].
member_returns as (
    select
        members.retention_name,
        members.cohort_date,
        members.user_id,
        members.breakdown_value,
        return_periods.period_index - members.cohort_index as first_number,
        return_periods.period_index - members.cohort_index as last_number
    from members
    inner join definitions
        on definitions.retention_name = members.retention_name
    inner join return_periods
        on return_periods.retention_name = members.retention_name
        and return_periods.user_id = members.user_id
    where definitions.retention_mode = 'on'
        and return_periods.period_index - members.cohort_index between 1 and definitions.horizon
    union all
    select
        members.retention_name,
        members.cohort_date,
        members.user_id,
        members.breakdown_value,
        1 as first_number,
        least(last_returns.last_index - members.cohort_index, definitions.horizon) as last_number
    from members
    inner join definitions
        on definitions.retention_name = members.retention_name
    inner join last_returns
        on last_returns.retention_name = members.retention_name
        and last_returns.user_id = members.user_id
    where definitions.retention_mode = 'on_or_after'
        and last_returns.last_index > members.cohort_index
),

final as (
    select
        retention_name,
        cohort_date,
        user_id,
        breakdown_value,
        0 as first_number,
        0 as last_number
    from members
    union all
    select
        retention_name,
        cohort_date,
        user_id,
        breakdown_value,
        first_number,
        last_number
    from member_returns
)

select * from final

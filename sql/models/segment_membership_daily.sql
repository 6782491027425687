/* Segment membership: the users of each configured segment on each as-of date. The rule trees of meta.def_segment_nodes are evaluated leaves first, then one pass per tree level from the deepest (8) up to the root (1); members are limited to the universe (users with activity on or before the as-of date). Grain: one row per segment_name, as_of_date and user_id. */
{% import 'macros/filters.sql' as filters %}
{% import 'macros/dates.sql' as dates %}
with

calendar as (
    {{ dates.range_dates('as_of_date') | indent(4) }}
),

nodes as (
    select * from meta.def_segment_nodes
),

-- The users a scoped build rebuilds (every user otherwise).
scope as (
    select user_id from meta.build_scope where model_name = :model_name
),

filter_values as (
    select * from meta.def_segment_values
),

-- Not materialized: each leaf kind reads only the events it needs (a materialized copy held every event of all
-- history: 4.9 s and 5.8 GB at 45 million events, with no segment configured).
events as not materialized (
    select
        user_id,
        event_id,
        source_name,
        load_date,
        event_name,
        event_time,
        event_date,
        platform,
        app_version,
        channel,
        properties,
        is_activity
    from models.stg_events
    where event_date <= cast(:end_date as date)
        and (not cast(:scoped as boolean) or user_id in (select scope.user_id from scope))
),

-- First-ever activity over all history (not the lookback): the universe and the first_seen leaves.
first_activity as (
    select
        user_id,
        min(activity_date) as first_active_date
    from models.user_activity_daily
    where activity_date <= cast(:end_date as date)
        and (not cast(:scoped as boolean) or user_id in (select scope.user_id from scope))
    group by user_id
),

universe as (
    select
        calendar.as_of_date,
        first_activity.user_id
    from calendar
    inner join first_activity
        on first_activity.first_active_date <= calendar.as_of_date
),

-- Leaf did_event: at least min_count events named event_name on the `days` dates ending on the as-of date.
did_event_leaves as (
    select
        segment_name,
        node_id,
        parent_id,
        depth,
        event_name,
        min_count,
        days
    from nodes
    where kind = 'did_event'
),

daily_event_counts as (
    select
        user_id,
        event_name,
        event_date,
        count(*) as count_events
    from events
    where one_of(event_name, (select did_event_leaves.event_name from did_event_leaves))
        and event_date > cast(:start_date as date) - (select coalesce(max(did_event_leaves.days), 0) from did_event_leaves)
    group by user_id, event_name, event_date
),

did_event_true as (
    select
        leaves.segment_name,
        leaves.node_id,
        leaves.parent_id,
        leaves.depth,
        counts.user_id,
        calendar.as_of_date
    from did_event_leaves as leaves
    inner join daily_event_counts as counts
        on counts.event_name = leaves.event_name
    inner join calendar
        on counts.event_date between calendar.as_of_date - leaves.days + 1 and calendar.as_of_date
    group by leaves.segment_name, leaves.node_id, leaves.parent_id, leaves.depth, leaves.min_count, counts.user_id, calendar.as_of_date
    having sum(counts.count_events) >= leaves.min_count
),

-- Leaf first_seen: the first activity date is one of the `days` dates ending on the as-of date.
first_seen_true as (
    select
        leaves.segment_name,
        leaves.node_id,
        leaves.parent_id,
        leaves.depth,
        first_activity.user_id,
        calendar.as_of_date
    from nodes as leaves
    cross join calendar
    inner join first_activity
        on first_activity.first_active_date between calendar.as_of_date - leaves.days + 1 and calendar.as_of_date
    where leaves.kind = 'first_seen'
),

-- Leaf latest_property: the filter on the latest activity event up to the end of the as-of date
-- (largest event_time, then largest event_id in binary order, whatever the database collation, then largest source
-- and load date: (source_name, load_date, event_id) is unique, so the latest event is one event).
property_leaves as (
    select
        segment_name,
        node_id,
        parent_id,
        depth,
        property_key,
        op
    from nodes
    where kind = 'latest_property'
),

daily_last_events as (
    select
        user_id,
        event_date,
        platform,
        app_version,
        channel,
        properties,
        row_number() over (
            partition by user_id, event_date
            order by event_time desc, event_id collate "C" desc, source_name collate "C" desc, load_date desc
        ) as rank_in_day
    from events
    where is_activity
        and exists (select 1 from property_leaves)
),

-- The last event of an active day stays the latest until the user's next active day.
latest_events as (
    select
        user_id,
        event_date as valid_from,
        coalesce(lead(event_date) over (partition by user_id order by event_date) - 1, cast(:end_date as date)) as valid_to,
        platform,
        app_version,
        channel,
        properties
    from daily_last_events
    where rank_in_day = 1
),

latest_property_texts as (
    select
        leaves.segment_name,
        leaves.node_id,
        leaves.parent_id,
        leaves.depth,
        leaves.op,
        latest.user_id,
        latest.valid_from,
        latest.valid_to,
        {{ filters.property_value('latest', 'leaves.property_key') | indent(8) }} as property_text
    from property_leaves as leaves
    cross join latest_events as latest
    where latest.valid_to >= cast(:start_date as date)
),

-- A property is a number only when its text is a plain decimal number.
latest_property_typed as (
    select
        *,
        {{ filters.as_number('property_text') | indent(8) }} as property_number
    from latest_property_texts
),

latest_property_checks as (
    select
        checks.segment_name,
        checks.node_id,
        checks.parent_id,
        checks.depth,
        checks.op,
        checks.user_id,
        checks.valid_from,
        checks.valid_to,
        checks.property_text,
        -- is_set and is_not_set are decided from the property alone (latest_property_true)
        max(case when {{ filters.value_matches('checks.op', 'vals.value_kind', 'checks.property_text', 'checks.property_number', 'vals.value_text', 'vals.value_number') | indent(8) }} then 1 else 0 end) as any_value_holds
    from latest_property_typed as checks
    left join filter_values as vals
        on vals.segment_name = checks.segment_name
        and vals.node_id = checks.node_id
    group by
        checks.segment_name, checks.node_id, checks.parent_id, checks.depth, checks.op,
        checks.user_id, checks.valid_from, checks.valid_to, checks.property_text
),

latest_property_true as (
    select
        checks.segment_name,
        checks.node_id,
        checks.parent_id,
        checks.depth,
        checks.user_id,
        calendar.as_of_date
    from latest_property_checks as checks
    inner join calendar
        on calendar.as_of_date between checks.valid_from and checks.valid_to
    where case checks.op
        when 'is_set' then checks.property_text is not null
        when 'is_not_set' then checks.property_text is null
        when 'neq' then checks.any_value_holds = 0
        when 'not_in' then checks.any_value_holds = 0
        else checks.any_value_holds = 1
    end
),

-- Every leaf that holds, per user and as-of date.
leaf_true as (
    select * from did_event_true
    union all
    select * from first_seen_true
    union all
    select * from latest_property_true
),

-- A `not` holds for users of the universe whose child does not: each gets a zero vote.
not_slots as (
    select
        nodes.segment_name,
        nodes.node_id,
        nodes.depth,
        universe.user_id,
        universe.as_of_date
    from nodes
    cross join universe
    where nodes.kind = 'not'
),

-- One pass per level, deepest first: every true child votes 1 for its parent;
-- and = all children voted, or = at least one, not = none (its universe slot votes 0).
{% for depth in range(7, 0, -1) %}
depth_{{ depth }} as (
    select
        parents.segment_name,
        parents.node_id,
        parents.parent_id,
        parents.depth,
        votes.user_id,
        votes.as_of_date
    from (
        {%- if depth < 7 %}
        select segment_name, parent_id as node_id, user_id, as_of_date, 1 as vote from depth_{{ depth + 1 }}
        union all
        {%- endif %}
        select segment_name, parent_id as node_id, user_id, as_of_date, 1 as vote from leaf_true where depth = {{ depth + 1 }}
        union all
        select segment_name, node_id, user_id, as_of_date, 0 as vote from not_slots where depth = {{ depth }}
    ) as votes
    inner join nodes as parents
        on parents.segment_name = votes.segment_name
        and parents.node_id = votes.node_id
    group by parents.segment_name, parents.node_id, parents.parent_id, parents.depth, parents.kind, parents.child_count, votes.user_id, votes.as_of_date
    having case parents.kind
        when 'and' then sum(votes.vote) = parents.child_count
        when 'or' then sum(votes.vote) >= 1
        else sum(votes.vote) = 0
    end
),
{% endfor %}
roots as (
    select segment_name, user_id, as_of_date from depth_1
    union all
    select segment_name, user_id, as_of_date from leaf_true where depth = 1
),

-- Leaves can hold for users with no activity yet (an identity event named by did_event): not members.
final as (
    select
        roots.segment_name,
        roots.as_of_date,
        roots.user_id
    from roots
    inner join first_activity
        on first_activity.user_id = roots.user_id
        and first_activity.first_active_date <= roots.as_of_date
)

select * from final

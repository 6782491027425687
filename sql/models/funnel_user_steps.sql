/* Funnel levels per user: for each funnel, entry date E and user who entered (a step-1 event on E), the steps reached (level >= k) and the least time from step 1 to each, with the user's breakdown value. Levels are exactly windowFunnel(window, 'strict_once') with the first condition on E: for each "node" (a user's events at one millisecond that can fill step k) the latest start of a valid chain ending there, found by following each node's owner (the latest earlier node of the previous step), one step per pass of a recursive CTE. A build can take some users only (those whose events changed), from the first entry date their change can reach. Grain: one row per funnel, entry_date, user_id and step_index k <= level. */
{% import 'macros/filters.sql' as filters %}
{% import 'macros/segments.sql' as segments %}
{% import 'macros/keys.sql' as keys %}
{#- A group: a user's events at one millisecond, in one funnel. #}
{% set node_keys = ['funnel_no', 'user_id', 'event_ms'] %}
with recursive

funnels as (
    select * from meta.def_funnels
),

steps as (
    select * from meta.def_funnel_steps
),

filters as (
    select * from meta.def_funnel_filters
),

deadlines as (
    select * from meta.def_funnel_deadlines
),

step_sets as (
    select * from meta.def_funnel_step_sets
),

hall_bounds as (
    select * from meta.def_funnel_hall
),

-- The users a scoped build rebuilds (every user otherwise).
scope as (
    select user_id from meta.build_scope where model_name = :model_name
),

day_offsets as (
    select cast(day_offset as integer) as day_offset
    from generate_series(0, cast(:funnel_window_days as integer)) as offsets(day_offset)
),

-- Events named by a step, from the first entry date to the last date a window can reach.
candidates as not materialized (
    select
        steps.funnel_no,
        steps.step_index,
        steps.filter_count,
        funnel_events.event_id,
        funnel_events.source_name,
        funnel_events.load_date,
        funnel_events.user_id,
        funnel_events.event_date,
        cast(extract(epoch from funnel_events.event_time) * 1000 as bigint) as event_ms,
        funnel_events.platform,
        funnel_events.app_version,
        funnel_events.channel,
        funnel_events.properties
    from (
        select *
        from models.stg_events
        where event_date between cast(:start_date as date)
            and cast(:end_date as date) + cast(:funnel_window_days as integer)
            and one_of(event_name, (select steps.event_name from steps))
            and (not cast(:scoped as boolean) or user_id in (select scope.user_id from scope))
    ) as funnel_events
    inner join steps
        on steps.event_name = funnel_events.event_name
),

-- The events named by a step that has filters, with each filter of the step (materialized: each property read out
-- of the JSON once, not at each use of property_value).
filter_inputs as materialized (
    select
        steps.funnel_no,
        steps.step_index,
        events.event_id,
        events.source_name,
        events.load_date,
        {{ filters.filter_input_columns('filters', 'events') | indent(8) }}
    from models.stg_events as events
    inner join steps
        on steps.event_name = events.event_name
    inner join filters
        on filters.funnel_no = steps.funnel_no
        and filters.step_index = steps.step_index
    where events.event_date between cast(:start_date as date)
        and cast(:end_date as date) + cast(:funnel_window_days as integer)
        and steps.filter_count > 0
        and (not cast(:scoped as boolean) or events.user_id in (select scope.user_id from scope))
),

-- Per event and filter: does any listed value match? The events failing a filter of theirs.
{{ filters.failed_filter_ctes(['funnel_no', 'step_index'] + filters.event_key, 'filter_inputs', 'failed_steps') }},

-- Each (event, step) the event fills: its name is the step's event and all the step's filters hold; with the event's
-- id and the breakdown property of step-1 events. Not materialized: only the readers that need ids or properties read
-- it (steps with filters, breakdowns, several events at one millisecond), each with its own scan, which an engine
-- skips when the reader's other side is empty (at 45 million events, reading every event id cost DuckDB 0.35 s).
step_event_details as not materialized (
    select
        candidates.funnel_no,
        candidates.step_index,
        candidates.filter_count,
        candidates.event_id,
        candidates.source_name,
        candidates.load_date,
        candidates.user_id,
        candidates.event_date,
        candidates.event_ms,
        case
            when candidates.step_index = 1 and funnels.breakdown is not null then {{ filters.property_value('candidates', 'funnels.breakdown') | indent(12) }}
        end as breakdown_value
    from candidates
    inner join funnels
        on funnels.funnel_no = candidates.funnel_no
    -- (failed_steps only holds steps with filters; no OR here, which PostgreSQL could only plan as a subplan per row)
    where {{ filters.passes_filters('candidates', 'failed_steps', ['funnel_no', 'step_index'] + filters.event_key) | indent(4) }}
),

-- The same (event, step) pairs without ids or properties, as every path reads them (steps without filters straight
-- from the staged events: candidates is not materialized, so this scan reads only these columns).
step_events as (
    {%- for source, with_filters in [('candidates', '= 0'), ('step_event_details', '> 0')] %}
    {%- if not loop.first %}
    union all
    {%- endif %}
    select
        funnel_no,
        step_index,
        user_id,
        event_date,
        event_ms
    from {{ source }}
    where filter_count {{ with_filters }}
    {%- endfor %}
),

-- The users who enter each funnel on each date of the range (members of its segment on E, if it names one).
entries as (
    select
        step_events.funnel_no,
        step_events.user_id,
        step_events.event_date as entry_date,
        min(step_events.event_ms) as first_start_ms,
        max(step_events.event_ms) as last_start_ms
    from step_events
    inner join funnels
        on funnels.funnel_no = step_events.funnel_no
    {{ segments.membership_join('members', 'funnels.segment_name', 'step_events.event_date', 'step_events.user_id') | indent(4) }}
    where step_events.step_index = 1
        and step_events.event_date between cast(:start_date as date) and cast(:end_date as date)
        and (funnels.segment_name is null or members.user_id is not null)
    group by
        step_events.funnel_no,
        step_events.user_id,
        step_events.event_date
),

-- The breakdown value: the property on the user's earliest step-1 event on E (ties: the smallest event_id, then
-- source and load date: (source_name, load_date, event_id) names one event), or
-- membership of the breakdown segment on E.
entry_breakdowns as (
    select
        funnel_no,
        user_id,
        entry_date,
        breakdown_value
    from (
        select
            step_event_details.funnel_no,
            step_event_details.user_id,
            step_event_details.event_date as entry_date,
            coalesce(step_event_details.breakdown_value, '(none)') as breakdown_value,
            row_number() over (
                partition by step_event_details.funnel_no, step_event_details.user_id, step_event_details.event_date
                order by
                    step_event_details.event_ms,
                    step_event_details.event_id collate "C",
                    step_event_details.source_name collate "C",
                    step_event_details.load_date
            ) as event_rank
        from step_event_details
        inner join funnels
            on funnels.funnel_no = step_event_details.funnel_no
        where step_event_details.step_index = 1
            and funnels.breakdown is not null
            and step_event_details.event_date between cast(:start_date as date) and cast(:end_date as date)
    ) as ranked
    where event_rank = 1
    union all
    {{ segments.breakdown_segment_rows('entries', ['funnel_no', 'user_id', 'entry_date'], 'funnels', 'funnel_no', 'entry_date', 'members') | indent(4) }}
),

-- The events the chain CTEs below take: here all. An engine with a faster path of its own for some funnels and
-- users (on DuckDB: sql/models/funnel_conversion_daily.duckdb.sql) keeps here the events it leaves, and gives its
-- rows in fold_user_steps.
chain_events as (
    select *
    from step_events
),

-- The entries of the users the chain CTEs take (here all; an engine that keeps some users for its faster path
-- narrows this too, so that the joins below build on the chain users' entries only).
chain_entries as (
    select *
    from entries
),

-- Owners, in one pass per user and step k >= 2 over the events of steps k (targets) and k - 1 (sources) in
-- time order: owner_ms of a step-k event is the latest earlier millisecond of a step k - 1 event (targets
-- sort before sources of the same millisecond). Each event is a target of its step and a source of the next.
owner_inputs as (
    {%- for step_key, role_order, condition in [
        ('step_index', 0, 'step_index >= 2'),
        ('step_index + 1', 1, 'step_index < (select max(funnels.step_count) from funnels)'),
    ] %}
    {%- if not loop.first %}
    union all
    {%- endif %}
    select
        funnel_no,
        user_id,
        {{ step_key }} as step_key,
        {{ role_order }} as role_order,
        event_ms,
        event_date,
        step_index
    from chain_events
    where {{ condition }}
    {%- endfor %}
),

-- One node per group (a user's events at one millisecond) and step it can fill: the last row of each
-- millisecond and role. Step-1 nodes are the sources of step 2. is_shared_ms: events of steps k and k - 1
-- at one millisecond (maybe one event matching both).
step_nodes as (
    select
        funnel_no,
        user_id,
        event_ms,
        event_date,
        step_index,
        owner_ms,
        is_shared_ms
    from (
        select
            funnel_no,
            user_id,
            step_key,
            role_order,
            event_ms,
            event_date,
            step_index,
            max(case when role_order = 1 then event_ms end) over key_order as owner_ms,
            coalesce(lead(event_ms) over key_order = event_ms and lead(role_order) over key_order = role_order, false)
                as is_repeat,
            coalesce(role_order = 0 and lead(event_ms) over key_order = event_ms and lead(role_order) over key_order = 1, false)
                as is_shared_ms
        from owner_inputs
        window key_order as (
            partition by funnel_no, user_id, step_key
            order by event_ms, role_order
            rows between unbounded preceding and current row
        )
    ) as keyed
    where not is_repeat
        and (role_order = 0 or step_key = 2)
),

-- Groups of several events in an ordered funnel where events of consecutive steps share the millisecond:
-- there equal times may fill consecutive steps, with distinct events.
multi_event_groups as (
    select
        step_event_details.funnel_no,
        step_event_details.user_id,
        step_event_details.event_ms
    from step_event_details
    inner join (
        select distinct
            step_nodes.funnel_no,
            step_nodes.user_id,
            step_nodes.event_ms
        from step_nodes
        inner join funnels
            on funnels.funnel_no = step_nodes.funnel_no
        where not funnels.is_strict
            and step_nodes.is_shared_ms
    ) as shared
        on {{ keys.equal_keys('shared', 'step_event_details', node_keys) | indent(8) }}
    group by
        step_event_details.funnel_no,
        step_event_details.user_id,
        step_event_details.event_ms
    -- (more than one event: (source_name, load_date, event_id) names an event; an id alone can repeat)
    having min(step_event_details.event_id) <> max(step_event_details.event_id)
        or min(step_event_details.source_name) <> max(step_event_details.source_name)
        or min(step_event_details.load_date) <> max(step_event_details.load_date)
),

-- For a multi-event group and each set K of step classes: how many of its events match a step of K.
multi_event_set_counts as (
    select
        step_event_details.funnel_no,
        step_event_details.user_id,
        step_event_details.event_ms,
        step_sets.set_no,
        -- (one text per event: source names are simple names, without '|', and dates have one length)
        count(distinct
            step_event_details.source_name || '|' || cast(step_event_details.load_date as varchar) || '|'
            || step_event_details.event_id
        ) as event_count
    from step_event_details
    inner join multi_event_groups
        on {{ keys.equal_keys('multi_event_groups', 'step_event_details', node_keys) | indent(8) }}
    inner join step_sets
        on step_sets.funnel_no = step_event_details.funnel_no
        and step_sets.step_index = step_event_details.step_index
    group by
        step_event_details.funnel_no,
        step_event_details.user_id,
        step_event_details.event_ms,
        step_sets.set_no
),

-- Hall's condition: steps j..i can be filled by distinct events of the group iff j >= every bound that applies
-- (j = 1 when none does).
multi_event_entry_steps as (
    select
        multi_event_groups.funnel_no,
        multi_event_groups.user_id,
        multi_event_groups.event_ms,
        hall_bounds.step_index,
        max(hall_bounds.min_entry_step) as min_entry_step
    from multi_event_groups
    inner join (select distinct funnel_no, set_no from step_sets) as sets
        on sets.funnel_no = multi_event_groups.funnel_no
    left join multi_event_set_counts as set_counts
        on {{ keys.equal_keys('set_counts', 'multi_event_groups', node_keys) | indent(8) }}
        and set_counts.set_no = sets.set_no
    inner join hall_bounds
        on hall_bounds.funnel_no = sets.funnel_no
        and hall_bounds.set_no = sets.set_no
        and hall_bounds.event_count = coalesce(set_counts.event_count, 0)
    group by
        multi_event_groups.funnel_no,
        multi_event_groups.user_id,
        multi_event_groups.event_ms,
        hall_bounds.step_index
),

-- A node enters at step m, the least m such that its group's events can fill steps m..k together (m = k for
-- one event, or in strict order); its owner is the latest earlier node of step m - 1: for m < k the owner of
-- the group's step-m node.
multi_event_nodes as (
    select
        step_nodes.funnel_no,
        step_nodes.user_id,
        step_nodes.event_ms,
        step_nodes.event_date,
        step_nodes.step_index,
        coalesce(multi_event_entry_steps.min_entry_step, 1) as min_entry_step,
        entry_step_nodes.owner_ms
    from step_nodes
    inner join multi_event_groups
        on {{ keys.equal_keys('multi_event_groups', 'step_nodes', node_keys) | indent(8) }}
    left join multi_event_entry_steps
        on {{ keys.equal_keys('multi_event_entry_steps', 'step_nodes', node_keys + ['step_index']) | indent(8) }}
    left join step_nodes as entry_step_nodes
        on {{ keys.equal_keys('entry_step_nodes', 'multi_event_entry_steps', node_keys) | indent(8) }}
        and entry_step_nodes.step_index = multi_event_entry_steps.min_entry_step
),

nodes as (
    select
        all_nodes.*,
        funnels.window_ms,
        funnels.window_days
    from (
        select
            funnel_no,
            user_id,
            event_ms,
            event_date,
            step_index,
            step_index as min_entry_step,
            owner_ms
        from step_nodes
        where not exists (
            select 1
            from multi_event_groups
            where {{ keys.equal_keys('multi_event_groups', 'step_nodes', node_keys) | indent(16) }}
        )
        union all
        select * from multi_event_nodes
    ) as all_nodes
    inner join funnels
        on funnels.funnel_no = all_nodes.funnel_no
),

-- The pass that computes a node entering at step m >= 2 follows it from its owner (the step m - 1 node at
-- owner_ms). A node entering below its own step k rides along, following itself, at passes m + 1 .. k.
chain_links as (
    select
        funnel_no,
        user_id,
        owner_ms,
        min_entry_step - 1 as owner_step,
        min_entry_step as pass_no,
        event_ms,
        event_date,
        step_index,
        window_ms,
        window_days
    from nodes
    where min_entry_step >= 2
    union all
    select
        nodes.funnel_no,
        nodes.user_id,
        nodes.event_ms as owner_ms,
        nodes.step_index as owner_step,
        passes.step_index as pass_no,
        nodes.event_ms,
        nodes.event_date,
        nodes.step_index,
        nodes.window_ms,
        nodes.window_days
    from nodes
    inner join steps as passes
        on passes.funnel_no = nodes.funnel_no
        and passes.step_index > nodes.min_entry_step
        and passes.step_index <= nodes.step_index
),

-- start_ms of a node: the latest start (any date) of a valid chain ending there. It is never smaller at a later
-- node of the same step, so it is the start of the node's owner: one step per pass, an equi-join. A node out of
-- its window is dropped, and so are the nodes it owns (later, so out of the window too).
chains (funnel_no, user_id, event_ms, event_date, step_index, start_ms, start_date, window_ms, window_days, pass_no) as (
    select
        funnel_no,
        user_id,
        event_ms,
        event_date,
        step_index,
        event_ms as start_ms,
        event_date as start_date,
        window_ms,
        window_days,
        1 as pass_no
    from nodes
    where min_entry_step = 1
    union all
    select
        links.funnel_no,
        links.user_id,
        links.event_ms,
        links.event_date,
        links.step_index,
        previous.start_ms,
        previous.start_date,
        links.window_ms,
        links.window_days,
        links.pass_no
    from chain_links as links
    inner join chains as previous
        on links.funnel_no = previous.funnel_no
        and links.user_id = previous.user_id
        and links.owner_ms = previous.event_ms
        and links.owner_step = previous.step_index
        and links.pass_no = previous.pass_no + 1
    where links.event_ms - previous.start_ms <= links.window_ms
),

-- Per entry date E, a node's latest start on E is the smaller of its start and the last start on E (its owner
-- chain ends at a step-2 node, whose owner on E is the latest start on E before it); it must be on E. On the
-- start's own date that is the start itself; on an earlier date, the last start there, if the node is within
-- the window from it. Per user, E and step k <= level: the least t_k - t_1 over the valid chains.
node_conversions as (
    select
        funnel_no,
        user_id,
        start_date as entry_date,
        step_index,
        event_ms - start_ms as ms_to_convert
    from chains
    where step_index = pass_no
        and start_date between cast(:start_date as date) and cast(:end_date as date)
        -- a start on E is an entry unless the funnel's segment leaves the user out on E
        and exists (
            select 1
            from chain_entries
            where chain_entries.funnel_no = chains.funnel_no
                and chain_entries.user_id = chains.user_id
                and chain_entries.entry_date = chains.start_date
        )
    union all
    select
        earlier_dates.funnel_no,
        earlier_dates.user_id,
        earlier_dates.entry_date,
        earlier_dates.step_index,
        earlier_dates.event_ms - chain_entries.last_start_ms as ms_to_convert
    from (
        select
            chains.funnel_no,
            chains.user_id,
            chains.step_index,
            chains.event_ms,
            chains.window_ms,
            chains.event_date - day_offsets.day_offset as entry_date
        from chains
        inner join day_offsets
            on day_offsets.day_offset between 1 and chains.window_days
        where chains.step_index = chains.pass_no
            and chains.event_date - day_offsets.day_offset < chains.start_date
    ) as earlier_dates
    inner join chain_entries
        on {{ keys.equal_keys('chain_entries', 'earlier_dates', ['funnel_no', 'user_id', 'entry_date']) | indent(8) }}
    where earlier_dates.event_ms - chain_entries.last_start_ms <= earlier_dates.window_ms
),

-- Per user, E and step k <= level, from an engine's faster path: the least t_k - t_1 (none here; see chain_events).
fold_user_steps as (
    select
        funnel_no,
        user_id,
        entry_date,
        cast(null as bigint) as step_index,
        cast(null as bigint) as ms_to_convert
    from entries
    where false
),

user_steps as (
    select
        funnel_no,
        user_id,
        entry_date,
        step_index,
        min(ms_to_convert) as ms_to_convert
    from node_conversions
    group by
        funnel_no,
        user_id,
        entry_date,
        step_index
    union all
    select * from fold_user_steps
),

final as (
    select
        user_steps.funnel_no,
        user_steps.entry_date,
        user_steps.user_id,
        user_steps.step_index,
        user_steps.ms_to_convert,
        entry_breakdowns.breakdown_value
    from user_steps
    left join entry_breakdowns
        on {{ keys.equal_keys('entry_breakdowns', 'user_steps', ['funnel_no', 'user_id', 'entry_date']) | indent(8) }}
)

select * from final

/* Funnel conversion per funnel, entry date E, breakdown value and step k: the users who entered (a step-1 event on E) and who reached step k (level >= k), conversions and time to convert. The level is computed exactly as windowFunnel(window, 'strict_once'): for every step-k "node" (a user's events at one millisecond matching step k, per entry date) the latest start of a valid chain ending there, one step per pass of the recursive CTE. Grain: one row per funnel_name, entry_date, breakdown_value and step_index. */
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

calendar as (
    select cast(day as date) as entry_date
    from generate_series(cast(:start_date as date), cast(:end_date as date), interval 1 day) as days(day)
),

day_offsets as (
    select cast(day_offset as integer) as day_offset
    from generate_series(0, cast(:funnel_window_days as integer)) as offsets(day_offset)
),

-- Events named by a step, from the first entry date to the last date a window can reach.
candidates as (
    select
        steps.funnel_no,
        steps.step_index,
        steps.filter_count,
        events.event_id,
        events.user_id,
        events.event_date,
        cast(extract(epoch from events.event_time) * 1000 as bigint) as event_ms,
        events.platform,
        events.app_version,
        events.channel,
        events.properties
    from models.stg_events as events
    inner join steps
        on steps.event_name = events.event_name
    where events.event_date between cast(:start_date as date)
        and cast(:end_date as date) + cast(:funnel_window_days as integer)
),

filter_inputs as (
    select
        candidates.funnel_no,
        candidates.step_index,
        candidates.event_id,
        filters.filter_no,
        filters.op,
        filters.value_kind,
        filters.value_text,
        filters.value_number,
        filters.is_negated,
        case filters.property
            when 'platform' then candidates.platform
            when 'app_version' then candidates.app_version
            when 'channel' then candidates.channel
            else prop(candidates.properties, filters.property)
        end as property_value
    from candidates
    inner join filters
        on filters.funnel_no = candidates.funnel_no
        and filters.step_index = candidates.step_index
    where candidates.filter_count > 0
),

filter_values as (
    select
        *,
        -- a number only when the text is a plain decimal number (the cast can then never fail)
        case
            when regexp_matches(property_value, '^-?[0-9]{1,200}([.][0-9]{1,200})?([eE][-+]?[0-9]{1,2})?$')
                then cast(property_value as double)
        end as property_number
    from filter_inputs
),

-- Per event, step and filter: does any listed value match? Negated ops (neq, not_in, is_not_set) hold when none does.
filter_results as (
    select
        funnel_no,
        step_index,
        event_id,
        filter_no,
        is_negated,
        coalesce(bool_or(
            case
                when op in ('is_set', 'is_not_set') then property_value is not null
                when op = 'contains' then strpos(property_value, value_text) > 0
                when value_kind = 'number' then case
                    when op in ('eq', 'neq', 'in', 'not_in') then property_number = value_number
                    when op = 'gt' then property_number > value_number
                    when op = 'gte' then property_number >= value_number
                    when op = 'lt' then property_number < value_number
                    when op = 'lte' then property_number <= value_number
                end
                else case
                    when op in ('eq', 'neq', 'in', 'not_in') then property_value = value_text
                    when op = 'gt' then property_value collate "C" > value_text
                    when op = 'gte' then property_value collate "C" >= value_text
                    when op = 'lt' then property_value collate "C" < value_text
                    when op = 'lte' then property_value collate "C" <= value_text
                end
            end
        ), false) as is_value_match
    from filter_values
    group by
        funnel_no,
        step_index,
        event_id,
        filter_no,
        is_negated
),

failed_steps as (
    select distinct
        funnel_no,
        step_index,
        event_id
    from filter_results
    where is_value_match = is_negated
),

-- Each (event, step) the event fills: its name is the step's event and all the step's filters hold.
step_events as (
    select
        candidates.funnel_no,
        candidates.step_index,
        candidates.event_id,
        candidates.user_id,
        candidates.event_date,
        candidates.event_ms,
        case
            when candidates.step_index = 1 and funnels.breakdown is not null then case funnels.breakdown
                when 'platform' then candidates.platform
                when 'app_version' then candidates.app_version
                when 'channel' then candidates.channel
                else prop(candidates.properties, funnels.breakdown)
            end
        end as breakdown_value
    from candidates
    inner join funnels
        on funnels.funnel_no = candidates.funnel_no
    where candidates.filter_count = 0
        or not exists (
            select 1
            from failed_steps
            where failed_steps.funnel_no = candidates.funnel_no
                and failed_steps.step_index = candidates.step_index
                and failed_steps.event_id = candidates.event_id
        )
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
    where step_events.step_index = 1
        and step_events.event_date between cast(:start_date as date) and cast(:end_date as date)
        and (
            funnels.segment_name is null
            or exists (
                select 1
                from models.segment_membership_daily as members
                where members.segment_name = funnels.segment_name
                    and members.as_of_date = step_events.event_date
                    and members.user_id = step_events.user_id
            )
        )
    group by
        step_events.funnel_no,
        step_events.user_id,
        step_events.event_date
),

-- The breakdown value: the property on the user's earliest step-1 event on E (ties: the smallest event_id).
entry_breakdowns as (
    select
        funnel_no,
        user_id,
        entry_date,
        breakdown_value
    from (
        select
            step_events.funnel_no,
            step_events.user_id,
            step_events.event_date as entry_date,
            coalesce(step_events.breakdown_value, '(none)') as breakdown_value,
            row_number() over (
                partition by step_events.funnel_no, step_events.user_id, step_events.event_date
                order by step_events.event_ms, step_events.event_id collate "C"
            ) as event_rank
        from step_events
        inner join funnels
            on funnels.funnel_no = step_events.funnel_no
        where step_events.step_index = 1
            and funnels.breakdown is not null
            and step_events.event_date between cast(:start_date as date) and cast(:end_date as date)
    ) as ranked
    where event_rank = 1
),

-- A "group" is a user's events at one millisecond; one row per group and step it can fill.
group_steps as (
    select
        funnel_no,
        user_id,
        event_ms,
        step_index,
        min(event_date) as event_date,
        min(event_id) as first_event_id,
        max(event_id) as last_event_id
    from step_events
    group by
        funnel_no,
        user_id,
        event_ms,
        step_index
),

-- Groups of several events in an ordered funnel: equal times may fill consecutive steps with distinct events.
multi_event_groups as (
    select
        group_steps.funnel_no,
        group_steps.user_id,
        group_steps.event_ms
    from group_steps
    inner join funnels
        on funnels.funnel_no = group_steps.funnel_no
    where not funnels.is_strict
    group by
        group_steps.funnel_no,
        group_steps.user_id,
        group_steps.event_ms
    having min(group_steps.first_event_id) <> max(group_steps.last_event_id)
),

-- For a multi-event group and each set K of step classes: how many of its events match a step of K.
multi_event_set_counts as (
    select
        step_events.funnel_no,
        step_events.user_id,
        step_events.event_ms,
        step_sets.set_no,
        count(distinct step_events.event_id) as event_count
    from step_events
    inner join multi_event_groups
        on multi_event_groups.funnel_no = step_events.funnel_no
        and multi_event_groups.user_id = step_events.user_id
        and multi_event_groups.event_ms = step_events.event_ms
    inner join step_sets
        on step_sets.funnel_no = step_events.funnel_no
        and step_sets.step_index = step_events.step_index
    group by
        step_events.funnel_no,
        step_events.user_id,
        step_events.event_ms,
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
        on set_counts.funnel_no = multi_event_groups.funnel_no
        and set_counts.user_id = multi_event_groups.user_id
        and set_counts.event_ms = multi_event_groups.event_ms
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

-- For every group and step k >= 2: the latest earlier group with step k - 1 (its "owner" in the chain search).
owner_candidates as (
    select
        funnel_no,
        user_id,
        event_ms,
        step_index as step_key,
        0 as role_order,
        step_index
    from group_steps
    where step_index >= 2
    union all
    select
        group_steps.funnel_no,
        group_steps.user_id,
        group_steps.event_ms,
        group_steps.step_index + 1 as step_key,
        1 as role_order,
        group_steps.step_index
    from group_steps
    inner join funnels
        on funnels.funnel_no = group_steps.funnel_no
    where group_steps.step_index < funnels.step_count
),

owners as (
    select
        funnel_no,
        user_id,
        event_ms,
        step_index,
        owner_ms
    from (
        select
            funnel_no,
            user_id,
            event_ms,
            step_index,
            role_order,
            -- targets sort before sources of the same millisecond: the owner is strictly earlier
            max(case when role_order = 1 then event_ms end) over (
                partition by funnel_no, user_id, step_key
                order by event_ms, role_order
                rows between unbounded preceding and current row
            ) as owner_ms
        from owner_candidates
    ) as ranked
    where role_order = 0
),

group_nodes as (
    select
        group_steps.funnel_no,
        group_steps.user_id,
        group_steps.event_ms,
        group_steps.event_date,
        group_steps.step_index,
        case
            when multi_event_groups.event_ms is null then group_steps.step_index
            else coalesce(multi_event_entry_steps.min_entry_step, 1)
        end as min_entry_step
    from group_steps
    left join multi_event_groups
        on multi_event_groups.funnel_no = group_steps.funnel_no
        and multi_event_groups.user_id = group_steps.user_id
        and multi_event_groups.event_ms = group_steps.event_ms
    left join multi_event_entry_steps
        on multi_event_entry_steps.funnel_no = group_steps.funnel_no
        and multi_event_entry_steps.user_id = group_steps.user_id
        and multi_event_entry_steps.event_ms = group_steps.event_ms
        and multi_event_entry_steps.step_index = group_steps.step_index
),

-- Each group node once per entry date E its time can serve (between the first start on E and the last start + window).
-- Step 1 counts only on E, so a group after E enters at step 2 at the earliest.
nodes as (
    select
        group_nodes.funnel_no,
        group_nodes.user_id,
        entries.entry_date,
        group_nodes.event_ms,
        group_nodes.step_index,
        case
            when group_nodes.event_date <> entries.entry_date and group_nodes.min_entry_step = 1 then 2
            else group_nodes.min_entry_step
        end as min_entry_step,
        entries.first_start_ms,
        entries.last_start_ms,
        funnels.window_ms
    from group_nodes
    inner join funnels
        on funnels.funnel_no = group_nodes.funnel_no
    inner join day_offsets
        on day_offsets.day_offset <= funnels.window_days
    inner join entries
        on entries.funnel_no = group_nodes.funnel_no
        and entries.user_id = group_nodes.user_id
        and entries.entry_date = group_nodes.event_date - day_offsets.day_offset
    where group_nodes.event_ms between entries.first_start_ms and entries.last_start_ms + funnels.window_ms
        and (group_nodes.step_index > 1 or day_offsets.day_offset = 0)
),

-- The owner of a node entering at step m >= 2, within its entry date: for m = 2 the latest start on E before it.
targets as (
    select
        nodes.funnel_no,
        nodes.user_id,
        nodes.entry_date,
        nodes.event_ms,
        nodes.step_index,
        nodes.min_entry_step,
        nodes.window_ms,
        case
            when nodes.min_entry_step = 2 then least(owners.owner_ms, nodes.last_start_ms)
            else owners.owner_ms
        end as owner_ms
    from nodes
    inner join owners
        on owners.funnel_no = nodes.funnel_no
        and owners.user_id = nodes.user_id
        and owners.event_ms = nodes.event_ms
        and owners.step_index = nodes.min_entry_step
    where nodes.min_entry_step >= 2
        and owners.owner_ms >= nodes.first_start_ms
),

-- Pass p computes the nodes entering at step p: the latest start of a valid chain ending there is the
-- latest start over the step p - 1 nodes up to the owner (a running max), if the node is within its window.
-- Nodes that enter below their own step (several events of one millisecond) ride along until their step.
chains (funnel_no, user_id, entry_date, event_ms, step_index, start_ms, pass_no) as (
    select
        funnel_no,
        user_id,
        entry_date,
        event_ms,
        step_index,
        event_ms as start_ms,
        1 as pass_no
    from nodes
    where min_entry_step = 1
    union all
    select
        coalesce(targets.funnel_no, previous.funnel_no) as funnel_no,
        coalesce(targets.user_id, previous.user_id) as user_id,
        coalesce(targets.entry_date, previous.entry_date) as entry_date,
        coalesce(targets.event_ms, previous.event_ms) as event_ms,
        coalesce(targets.step_index, previous.step_index) as step_index,
        case when targets.event_ms is null then previous.start_ms else previous.best_start_ms end as start_ms,
        previous.pass_no + 1 as pass_no
    from (
        select
            chains.*,
            max(case when chains.step_index = chains.pass_no then chains.start_ms end) over (
                partition by chains.funnel_no, chains.user_id, chains.entry_date
                order by chains.event_ms
            ) as best_start_ms
        from chains
    ) as previous
    left join targets
        on targets.funnel_no = previous.funnel_no
        and targets.user_id = previous.user_id
        and targets.entry_date = previous.entry_date
        and targets.owner_ms = previous.event_ms
        and targets.min_entry_step = previous.pass_no + 1
        and previous.step_index = previous.pass_no
    where (targets.event_ms is not null and targets.event_ms - previous.best_start_ms <= targets.window_ms)
        or (targets.event_ms is null and previous.step_index > previous.pass_no)
),

-- Per user, entry date and step k <= level: the least t_k - t_1 over the valid chains.
user_steps as (
    select
        funnel_no,
        user_id,
        entry_date,
        step_index,
        min(event_ms - start_ms) as ms_to_convert
    from chains
    where step_index = pass_no
    group by
        funnel_no,
        user_id,
        entry_date,
        step_index
),

members as (
    select
        funnel_no,
        user_id,
        entry_date,
        'all' as breakdown_value
    from entries
    union all
    select
        entries.funnel_no,
        entries.user_id,
        entries.entry_date,
        entry_breakdowns.breakdown_value
    from entries
    inner join entry_breakdowns
        on entry_breakdowns.funnel_no = entries.funnel_no
        and entry_breakdowns.user_id = entries.user_id
        and entry_breakdowns.entry_date = entries.entry_date
),

step_counts as (
    select
        members.funnel_no,
        members.entry_date,
        members.breakdown_value,
        user_steps.step_index,
        count(*) as reached_users,
        quantile_cont(cast(user_steps.ms_to_convert as double) / 1000.0, 0.5) as median_seconds,
        quantile_cont(cast(user_steps.ms_to_convert as double) / 1000.0, 0.9) as p90_seconds
    from members
    inner join user_steps
        on user_steps.funnel_no = members.funnel_no
        and user_steps.user_id = members.user_id
        and user_steps.entry_date = members.entry_date
    group by
        members.funnel_no,
        members.entry_date,
        members.breakdown_value,
        user_steps.step_index
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
        cast(:end_date as date) >= grid.entry_date + coalesce(deadlines.window_days, funnels.deadline_days) as is_complete
    from grid
    inner join funnels
        on funnels.funnel_no = grid.funnel_no
    inner join steps
        on steps.funnel_no = grid.funnel_no
    left join step_counts as entered
        on entered.funnel_no = grid.funnel_no
        and entered.entry_date = grid.entry_date
        and entered.breakdown_value = grid.breakdown_value
        and entered.step_index = 1
    left join step_counts as reached
        on reached.funnel_no = grid.funnel_no
        and reached.entry_date = grid.entry_date
        and reached.breakdown_value = grid.breakdown_value
        and reached.step_index = steps.step_index
    left join step_counts as previous
        on previous.funnel_no = grid.funnel_no
        and previous.entry_date = grid.entry_date
        and previous.breakdown_value = grid.breakdown_value
        and previous.step_index = steps.step_index - 1
    left join deadlines
        on deadlines.funnel_no = grid.funnel_no
        and deadlines.entry_date = grid.entry_date
)

select * from final

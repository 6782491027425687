/* DuckDB path for the funnels whose steps name distinct events (each event then fills at most one step): one
ordered pass per user and entry date instead of the chain CTEs, which keep the other funnels and the users with very
long lists. Reason for the override: the pass uses DuckDB list lambdas (list_reduce), which PostgreSQL does not have;
at 45 million events it builds the benchmark funnel in less than half the time and about half the memory of the
chain CTEs (benchmarks/bench_models.py). These CTEs replace the same-named ones of funnel_user_steps.sql or
come just before one that does; the rest of the model is shared.

The pass, over a user's events from the first step-1 event on E to the last one plus the window (step-1 events on E
only), in time order (equal times: lower steps first, or in mode strictly_increasing higher steps first, so that an
event never follows another of the same millisecond), keeps per step j:
- R_j, the latest start of a valid chain ending at the latest step-j event so far. A step-j event x extends the chain
  of R_(j-1) when x - R_(j-1) <= window; R_j never decreases, so the latest step-(j-1) event is the best to follow.
- D_j, the least x - R_(j-1) over those events: the least t_j - t_1 over the valid chains.
The level is the largest j with an R_j. list_reduce costs most per list, not per event (its state is a list, copied
at every event): the lists of one or two events, two thirds of them at 45 million events, are read directly
(short_lists) and only the longer ones are folded. */
{% import 'macros/funnel_pass.sql' as pass %}
with

folded_funnels as (
    {{ pass.folded_funnels() | indent(4) }}
),

-- Every entry starts at its first step-1 event on E (the pass begins there), so the events that can extend a chain
-- starting on E are, once per E: its later step-1 events, and later steps' events from that first start (strictly
-- after it in mode strictly_increasing) to the last start plus the window.
fold_events as (
    select
        dated_events.funnel_no,
        dated_events.user_id,
        entries.entry_date,
        entries.first_start_ms,
        {'ms': dated_events.event_ms, 'signed_step': dated_events.signed_step} as event
    {{ pass.pass_events_from() | indent(4) }}
),

-- list_sort orders the structs by ms, then signed_step.
fold_lists as (
    select
        funnel_no,
        user_id,
        entry_date,
        first_start_ms,
        list_sort(list(event)) as events
    from fold_events
    group by
        funnel_no,
        user_id,
        entry_date,
        first_start_ms
),

-- A user whose list on some E is longer than :funnel_pass_max_events takes the chain CTEs for that funnel, on every E
-- (the pass steps through the elements of a chunk's lists together: one long list would be folded alone, slowly).
long_fold_users as (
    select distinct
        funnel_no,
        user_id
    from fold_lists
    where len(events) > cast(:funnel_pass_max_events as integer)
),

-- The funnels the pass leaves to the chain CTEs.
chain_funnels as (
    select funnel_no from funnels
    except
    select funnel_no from folded_funnels
),

{#- The rows of `rows` the chain CTEs take: those of the other funnels and of the long-list users. -#}
{% macro chain_rows(rows) -%}
select {{ rows }}.*
from {{ rows }}
inner join chain_funnels
    on chain_funnels.funnel_no = {{ rows }}.funnel_no
union all
select {{ rows }}.*
from {{ rows }}
inner join long_fold_users
    on long_fold_users.funnel_no = {{ rows }}.funnel_no
    and long_fold_users.user_id = {{ rows }}.user_id
{%- endmacro %}

{#- The rows of `rows` the pass takes (the rest of chain_rows'): of the folded funnels, not of a long-list user. -#}
{% macro pass_rows(rows) -%}
inner join folded_funnels
    on folded_funnels.funnel_no = {{ rows }}.funnel_no
left join long_fold_users
    on long_fold_users.funnel_no = {{ rows }}.funnel_no
    and long_fold_users.user_id = {{ rows }}.user_id
where long_fold_users.user_id is null
{%- endmacro %}

-- The chain CTEs take the other funnels' events and the long-list users' events.
chain_events as (
    {{ chain_rows('step_events') | indent(4) }}
),

-- Their entries, found the same two ways: the chain CTEs' joins then build on these only.
chain_entries as (
    {{ chain_rows('entries') | indent(4) }}
),

-- The lists the pass reads: all but the long-list users', with their funnel's step count and window.
pass_lists as not materialized (
    select
        fold_lists.*,
        folded_funnels.step_count,
        folded_funnels.window_ms
    from fold_lists
    {{ pass_rows('fold_lists') | indent(4) }}
),

-- state: [R_1 .. R_n, D_1 .. D_n] for a funnel of n steps (null: no chain yet), from R_1 = the first start, D_1 = 0.
fold_states as (
    select
        fold_lists.funnel_no,
        fold_lists.user_id,
        fold_lists.entry_date,
        fold_lists.step_count,
        list_reduce(
            fold_lists.events,
            lambda state, event: case
                when abs(event.signed_step) = 1 then list_transform(state, lambda value, j: case when j = 1 then event.ms else value end)
                when event.ms - state[abs(event.signed_step) - 1] <= fold_lists.window_ms then list_transform(
                    state,
                    lambda value, j: case
                        when j = abs(event.signed_step) then state[j - 1]
                        when j = fold_lists.step_count + abs(event.signed_step) then least(value, event.ms - state[abs(event.signed_step) - 1])
                        else value
                    end
                )
                else state
            end,
            list_transform(
                range(1, 2 * fold_lists.step_count + 1),
                lambda j: case
                    when j = 1 then fold_lists.first_start_ms
                    when j = fold_lists.step_count + 1 then cast(0 as bigint)
                end
            )
        ) as state
    from pass_lists as fold_lists
    where len(fold_lists.events) >= 3
),

-- Lists of one or two events (two thirds of them at 45 million events: the fold costs most per list, not per event)
-- are read directly: a = the first event, b = the second (if any). Step 2 is reached by a step-2 event a after the
-- first start, or b after the latest start before it (a, if a is a step-1 event); step 3 by a step-3 event b after
-- a step-2 event a, both within the window from the first start.
short_lists as (
    select
        fold_lists.funnel_no,
        fold_lists.user_id,
        fold_lists.entry_date,
        fold_lists.first_start_ms,
        fold_lists.window_ms,
        abs(fold_lists.events[1].signed_step) as a_step,
        fold_lists.events[1].ms as a_ms,
        abs(fold_lists.events[2].signed_step) as b_step,
        fold_lists.events[2].ms as b_ms,
        case when abs(fold_lists.events[1].signed_step) = 1 then fold_lists.events[1].ms else fold_lists.first_start_ms end
            as b_start_ms
    from pass_lists as fold_lists
    where len(fold_lists.events) <= 2
),

short_list_steps as (
    select
        funnel_no,
        user_id,
        entry_date,
        cast(2 as bigint) as step_index,
        -- (least skips nulls)
        least(
            case when a_step = 2 and a_ms - first_start_ms <= window_ms then a_ms - first_start_ms end,
            case when b_step = 2 and b_ms - b_start_ms <= window_ms then b_ms - b_start_ms end
        ) as ms_to_convert
    from short_lists
    where a_step = 2 or b_step = 2
    union all
    select
        funnel_no,
        user_id,
        entry_date,
        cast(3 as bigint) as step_index,
        b_ms - first_start_ms as ms_to_convert
    from short_lists
    where a_step = 2
        and b_step = 3
        and b_ms - first_start_ms <= window_ms
),

-- Step 1: every entry of the pass's users, at once. Later steps: where the pass found a chain.
fold_user_steps as (
    select
        entries.funnel_no,
        entries.user_id,
        entries.entry_date,
        cast(1 as bigint) as step_index,
        cast(0 as bigint) as ms_to_convert
    from entries
    {{ pass_rows('entries') | indent(4) }}
    union all
    select
        fold_states.funnel_no,
        fold_states.user_id,
        fold_states.entry_date,
        steps.step_index,
        fold_states.state[fold_states.step_count + steps.step_index] as ms_to_convert
    from fold_states
    inner join steps
        on steps.funnel_no = fold_states.funnel_no
    where steps.step_index >= 2
        and fold_states.state[steps.step_index] is not null
    union all
    select *
    from short_list_steps
    where ms_to_convert is not null
)

select * from fold_user_steps

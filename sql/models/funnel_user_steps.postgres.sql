/* PostgreSQL path for the funnels whose steps name distinct events (each event then fills at most one step): the
pass of the DuckDB override (sql/models/funnel_user_steps.duckdb.sql) written as one window pass per step instead
of a fold, which PostgreSQL has no list functions for. Reason for the override: the chain CTEs (step nodes, owners
followed one step per pass of a recursive CTE, conversions) sort or hash the million step events several times
over; at 5.2M demo events funnel_user_steps took 100.6 s on PostgreSQL against DuckDB's 5.4 s
(benchmarks/README.md). These CTEs replace the same-named ones of funnel_user_steps.sql or come just before one that
does; the chain CTEs keep the other funnels.

Per funnel, user and entry date E, over the events from the first step-1 event on E to the last one plus the window
(step-1 events on E only), in time order (equal times: lower steps first, or in mode strictly_increasing higher
steps first, so that an event never follows another of the same millisecond), the pass keeps R_j, the latest start
of a valid chain ending at a step-j event so far: R_1 is the latest step-1 event; a step-j event x extends a chain
when c(x), the value of R_(j-1) just before x, is set and x - c(x) <= window, and then R_j = c(x). R_(j-1) never
decreases, so just before a step-(j+1) event R_j is the largest c over the valid step-j events before it: a running
max over the valid step-j rows (valued c) and the step-(j+1) events (valued null), one window pass per step. The
least x - c(x) over the valid step-j events is the least t_j - t_1 over the valid chains; the level is the largest
j with a valid event. A funnel has at most 32 steps (config.py), so 31 passes are written out; a pass after the
last step any chain reached reads nothing (without that check, the 27 passes past a 5-step funnel's last step cost
as much as the whole pass, one scan of pass_events each). */
{% import 'macros/funnel_pass.sql' as pass %}
{% set max_steps = 32 %}
with

folded_funnels as (
    {{ pass.folded_funnels() | indent(4) }}
),

-- The events of the pass, once per entry date E whose window they can reach (as in the DuckDB override), and each
-- entry's first start, R_1's first value. signed_step: the step, negative in mode strictly_increasing (the order at
-- equal times).
pass_events as materialized (
    select
        dated_events.funnel_no,
        dated_events.user_id,
        entries.entry_date,
        dated_events.event_ms,
        dated_events.signed_step,
        dated_events.step_index,
        dated_events.window_ms
    {{ pass.pass_events_from(fence=true) | indent(4) }}
    union all
    select
        entries.funnel_no,
        entries.user_id,
        entries.entry_date,
        entries.first_start_ms as event_ms,
        case when folded_funnels.is_strict then -1 else 1 end as signed_step,
        cast(1 as bigint) as step_index,
        folded_funnels.window_ms
    from entries
    inner join folded_funnels
        on folded_funnels.funnel_no = entries.funnel_no
),

-- Step 1: every step-1 event is valid and starts its chain.
valid_1 as (
    select
        funnel_no,
        user_id,
        entry_date,
        event_ms,
        signed_step,
        window_ms,
        event_ms as chain_start
    from pass_events
    where step_index = 1
),
{% for j in range(2, max_steps + 1) %}

{% if j == 2 -%}
-- Step j: c(x) of each step-j event, the running max of the valid step-(j - 1) rows' chain starts before it; the
-- event is valid when c(x) is set and within the window.
{% endif -%}
valid_{{ j }} as materialized (
    select
        funnel_no,
        user_id,
        entry_date,
        event_ms,
        signed_step,
        window_ms,
        chain_start
    from (
        select
            funnel_no,
            user_id,
            entry_date,
            event_ms,
            signed_step,
            window_ms,
            is_target,
            max(chain_start) over (
                partition by funnel_no, user_id, entry_date
                order by event_ms, signed_step
                rows between unbounded preceding and current row
            ) as chain_start
        from (
            select
                funnel_no,
                user_id,
                entry_date,
                event_ms,
                signed_step,
                window_ms,
                false as is_target,
                chain_start
            from valid_{{ j - 1 }}
            union all
            select
                funnel_no,
                user_id,
                entry_date,
                event_ms,
                signed_step,
                window_ms,
                true as is_target,
                cast(null as bigint) as chain_start
            from pass_events
            where step_index = {{ j }}
                -- (uncorrelated: checked once, and the scan skipped past the last step any chain reached)
                and exists (select 1 from valid_{{ j - 1 }})
        ) as sources_and_targets
    ) as passed
    where is_target
        and event_ms - chain_start <= window_ms
),
{%- endfor %}

-- The chain CTEs take the other funnels' events and entries.
chain_events as (
    select step_events.*
    from step_events
    where step_events.funnel_no not in (select folded_funnels.funnel_no from folded_funnels)
),

chain_entries as (
    select entries.*
    from entries
    where entries.funnel_no not in (select folded_funnels.funnel_no from folded_funnels)
),

-- Step 1: every entry of the pass's funnels. Step j >= 2: where a step-j event is valid, the least x - c(x).
fold_user_steps as (
    select
        entries.funnel_no,
        entries.user_id,
        entries.entry_date,
        cast(1 as bigint) as step_index,
        cast(0 as bigint) as ms_to_convert
    from entries
    inner join folded_funnels
        on folded_funnels.funnel_no = entries.funnel_no
    {%- for j in range(2, max_steps + 1) %}
    union all
    select
        funnel_no,
        user_id,
        entry_date,
        cast({{ j }} as bigint) as step_index,
        min(event_ms - chain_start) as ms_to_convert
    from valid_{{ j }}
    group by
        funnel_no,
        user_id,
        entry_date
    {%- endfor %}
)

select * from fold_user_steps

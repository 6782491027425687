{% import 'macros/keys.sql' as keys %}
{#- What the single-pass funnel overrides (funnel_user_steps.duckdb.sql, funnel_user_steps.postgres.sql) share: which
    funnels take the pass, and which events each entry's pass reads. -#}

{#- The funnels whose steps name distinct events (each event then fills at most one step): the body of the CTE
    folded_funnels. -#}
{% macro folded_funnels() -%}
select
    funnels.funnel_no,
    funnels.step_count,
    funnels.window_ms,
    funnels.window_days,
    funnels.is_strict
from funnels
inner join (
    select
        funnel_no,
        count(distinct event_name) as event_names
    from steps
    group by funnel_no
) as named
    on named.funnel_no = funnels.funnel_no
where named.event_names = funnels.step_count
{%- endmacro %}

{#- The FROM and WHERE of the events an entry's pass reads, as dated_events joined to its entry (entries): once per
    entry date E whose window they can reach, from the first start on E (strictly after it in mode
    strictly_increasing) to the last start plus the window, step-1 events on E only, the first start itself left out
    (the pass starts from it). dated_events has funnel_no, user_id, entry_date, event_ms, signed_step (the step,
    negative in mode strictly_increasing: the order at equal times), step_index, window_ms and is_strict.
    `fence`: dated_events planned on its own (`offset 0`), for PostgreSQL: it otherwise joins the step events to the
    entries on the user alone and only then to the day offsets: at 946,532 demo events it sifted 10.0M pairs of
    events and entries, then 8.9M of those and offsets, for 0.96M rows; planned apart, 1.26M rows of events and
    offsets meet the entries on all three keys (benchmarks/README.md). -#}
{% macro pass_events_from(fence=false) -%}
from (
    select
        step_events.funnel_no,
        step_events.user_id,
        step_events.event_date - day_offsets.day_offset as entry_date,
        step_events.event_ms,
        case when folded_funnels.is_strict then -step_events.step_index else step_events.step_index end as signed_step,
        step_events.step_index,
        folded_funnels.window_ms,
        folded_funnels.is_strict
    from step_events
    inner join folded_funnels
        on folded_funnels.funnel_no = step_events.funnel_no
    inner join day_offsets
        on day_offsets.day_offset <= folded_funnels.window_days
        and (step_events.step_index > 1 or day_offsets.day_offset = 0)
    {%- if fence %}
    offset 0
    {%- endif %}
) as dated_events
inner join entries
    on {{ keys.equal_keys('entries', 'dated_events', ['funnel_no', 'user_id', 'entry_date']) | indent(4) }}
where dated_events.event_ms between entries.first_start_ms + case when dated_events.is_strict then 1 else 0 end
        and entries.last_start_ms + dated_events.window_ms
    and not (dated_events.step_index = 1 and dated_events.event_ms = entries.first_start_ms)
{%- endmacro %}

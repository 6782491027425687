{% import 'macros/keys.sql' as key_macros %}
{#- Property filters of funnel steps, retention events and segment rules (meta.def_*_filters): one definition of
    what each operator means, used by every model that evaluates them. -#}

{#- What identifies an event row of models.stg_events, and so the events whose filters are evaluated: deduplication
    works per source and within the lookback, so an event_id alone can repeat (another source, or a copy loaded
    outside the lookback: another user or another time, other properties); no two rows share all three. -#}
{% set event_key = ['source_name', 'load_date', 'event_id'] %}

{#- The property's text as a number, only when it is a plain decimal number of at most 200 digits before and after
    the point and an exponent of at most 2 (the cast can then never fail). The digit limits are a second pattern, no
    run of 201 digits, rather than {1,200} in the first: PostgreSQL's regex engine spends about 9 us a value on
    bounded repetitions that long, against 2 us for the two patterns (100,000 values, benchmarks/README.md). -#}
{% macro as_number(text) -%}
case
    when regexp_matches({{ text }}, '^-?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]{1,2})?$')
        and not regexp_matches({{ text }}, '[0-9]{201}')
        then cast({{ text }} as double)
end
{%- endmacro %}

{#- Does the property hold against one listed value? is_set/is_not_set: the property is present; contains: substring;
    comparisons: numerically when the listed value is a number, otherwise as text ordered in binary (whatever the
    collation). The negated operators (neq, not_in, is_not_set) compare like their positive form: the caller negates
    "any value matched". -#}
{% macro value_matches(op, kind, text, number, value_text, value_number) -%}
case
    when {{ op }} in ('is_set', 'is_not_set') then {{ text }} is not null
    when {{ op }} = 'contains' then strpos({{ text }}, {{ value_text }}) > 0
    when {{ kind }} = 'number' then case
        when {{ op }} in ('eq', 'neq', 'in', 'not_in') then {{ number }} = {{ value_number }}
        when {{ op }} = 'gt' then {{ number }} > {{ value_number }}
        when {{ op }} = 'gte' then {{ number }} >= {{ value_number }}
        when {{ op }} = 'lt' then {{ number }} < {{ value_number }}
        when {{ op }} = 'lte' then {{ number }} <= {{ value_number }}
    end
    else case
        when {{ op }} in ('eq', 'neq', 'in', 'not_in') then {{ text }} = {{ value_text }}
        when {{ op }} = 'gt' then {{ text }} collate "C" > {{ value_text }}
        when {{ op }} = 'gte' then {{ text }} collate "C" >= {{ value_text }}
        when {{ op }} = 'lt' then {{ text }} collate "C" < {{ value_text }}
        when {{ op }} = 'lte' then {{ text }} collate "C" <= {{ value_text }}
    end
end
{%- endmacro %}

{#- A property of an event row by its key: the three columns every event has, otherwise the JSON property. -#}
{% macro property_value(row, key) -%}
case {{ key }}
    when 'platform' then {{ row }}.platform
    when 'app_version' then {{ row }}.app_version
    when 'channel' then {{ row }}.channel
    else prop({{ row }}.properties, {{ key }})
end
{%- endmacro %}

{#- The columns of one filter (a row of `filters`, the definition's filters) that failed_filter_ctes reads, with the
    value of its property on the event `row`. -#}
{% macro filter_input_columns(filters, row) -%}
{{ filters }}.filter_no,
{{ filters }}.op,
{{ filters }}.value_kind,
{{ filters }}.value_text,
{{ filters }}.value_number,
{{ filters }}.is_negated,
{{ property_value(row, filters ~ '.property') }} as property_value
{%- endmacro %}

{#- The events (rows of `inputs`: `keys`, filter_no, op, value_kind, value_text, value_number, is_negated and
    property_value, one row per listed value) that fail one of their filters, as the CTE `name`: a filter holds when
    any listed value matches, a negated one (neq, not_in, is_not_set) when none does. -#}
{% macro failed_filter_ctes(keys, inputs, name) -%}
{#- (materialized: the property's number once per row; inlined, PostgreSQL evaluated it again at each of its uses
    in filter_results) #}
filter_values as materialized (
    select
        *,
        {{ as_number('property_value') | indent(8) }} as property_number
    from {{ inputs }}
),

filter_results as (
    select
        {{ keys | join(",\n        ") }},
        filter_no,
        is_negated,
        coalesce(bool_or(
            {{ value_matches('op', 'value_kind', 'property_value', 'property_number', 'value_text', 'value_number') | indent(12) }}
        ), false) as is_value_match
    from filter_values
    group by
        {{ keys | join(",\n        ") }},
        filter_no,
        is_negated
),

{{ name }} as (
    select distinct
        {{ keys | join(",\n        ") }}
    from filter_results
    where is_value_match = is_negated
)
{%- endmacro %}

{#- The condition that a row of `rows` holds all its filters: no row of `failed` (a CTE of failed_filter_ctes) has its
    `keys`. -#}
{% macro passes_filters(rows, failed, keys) -%}
not exists (
    select 1
    from {{ failed }}
    where {{ key_macros.equal_keys(failed, rows, keys) | indent(8) }}
)
{%- endmacro %}

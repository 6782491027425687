{#- Segment membership (models.segment_membership_daily) as the funnel and retention models use it: the segment a
    definition keeps its users to, and the breakdown by a segment. -#}

{#- The membership row of `user_id` in `segment` on `as_of_date`, as `alias`, by a left join (no row: not a member).
    A join, not "segment is null or exists (...)": PostgreSQL plans that OR as a subplan per row. -#}
{% macro membership_join(alias, segment, as_of_date, user_id) -%}
left join models.segment_membership_daily as {{ alias }}
    on {{ alias }}.segment_name = {{ segment }}
    and {{ alias }}.as_of_date = {{ as_of_date }}
    and {{ alias }}.user_id = {{ user_id }}
{%- endmacro %}

{#- The rows of `rows` (its `columns`) whose definition (the row of `definitions` with the same `key`) names a breakdown
    segment, with breakdown_value 'in <segment>' or 'not in <segment>': the user's membership on `date_column`. -#}
{% macro breakdown_segment_rows(rows, columns, definitions, key, date_column, alias) -%}
select
    {%- for column in columns %}
    {{ rows }}.{{ column }},
    {%- endfor %}
    case
        when {{ alias }}.user_id is not null then 'in ' || {{ definitions }}.breakdown_segment
        else 'not in ' || {{ definitions }}.breakdown_segment
    end as breakdown_value
from {{ rows }}
inner join {{ definitions }}
    on {{ definitions }}.{{ key }} = {{ rows }}.{{ key }}
{{ membership_join(alias, definitions ~ '.breakdown_segment', rows ~ '.' ~ date_column, rows ~ '.user_id') }}
where {{ definitions }}.breakdown_segment is not null
{%- endmacro %}

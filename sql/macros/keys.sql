{#- The condition that two row sources agree on each of `keys` (a join's ON, a correlated subquery's WHERE):
    `left`.key = `right`.key, one line each, joined by and. -#}
{% macro equal_keys(left, right, keys) -%}
{%- for key in keys %}
{{- '\nand ' if not loop.first }}{{ left }}.{{ key }} = {{ right }}.{{ key }}
{%- endfor %}
{%- endmacro %}

{#- The columns `names` of `rows`, one a line, comma-separated (a select list, a group by). -#}
{% macro qualified(rows, names) -%}
{%- for name in names %}
{{- ',\n' if not loop.first }}{{ rows }}.{{ name }}
{%- endfor %}
{%- endmacro %}

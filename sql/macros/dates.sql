{#- Every date of the build's range [start_date, end_date], one row each, as the column `column`. -#}
{% macro range_dates(column) -%}
select cast(day as date) as {{ column }}
from generate_series(cast(:start_date as date), cast(:end_date as date), interval 1 day) as days(day)
{%- endmacro %}

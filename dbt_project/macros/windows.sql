{#- Sum of `measure` over the `days` days before the as-of date, for a features query that
    joins each target row `t` (person_id, as_of_date) to its person-days `d` (the days before
    the as-of date). Counts stay BIGINT (DuckDB would widen their sums to HUGEINT). -#}
{% macro days_sum(measure, days, data_type='bigint') -%}
    cast(coalesce(sum(d.{{ measure }}) filter (where d.activity_date >= t.as_of_date - {{ days }}),
                  0) as {{ data_type }})
{%- endmacro %}

{#- Largest `measure` over the `days` days before the as-of date (null without any). -#}
{% macro days_max(measure, days) -%}
    max(d.{{ measure }}) filter (where d.activity_date >= t.as_of_date - {{ days }})
{%- endmacro %}

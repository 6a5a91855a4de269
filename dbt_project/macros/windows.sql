{#- Sum of `measure` over the `days` rows up to and including the current one, in window `w`
    (one row per person and day). Counts stay BIGINT (DuckDB would widen them to HUGEINT). -#}
{% macro rolling_sum(measure, days, data_type='bigint') -%}
    cast(sum({{ measure }}) over (w rows between {{ days - 1 }} preceding and current row)
         as {{ data_type }})
{%- endmacro %}

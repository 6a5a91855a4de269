{#- Sum of `measure` over the `days` days before the as-of date, for a features query that
    joins each target row `t` (person_id, as_of_date) to its person-days `d` (the days before
    the as-of date). Counts stay BIGINT (DuckDB would widen their sums to HUGEINT). -#}
{% macro days_sum(measure, days, data_type='bigint') -%}
    cast(coalesce(sum(d.{{ measure }}) filter (where d.activity_date >= t.as_of_date - {{ days }}),
                  0) as {{ data_type }})
{%- endmacro %}

{#- `relation`.`measure`_Nd for each window N of `windows` (a family of var feature_windows),
    each followed by a comma: a features query's pass-through of one windowed measure. -#}
{% macro window_columns(relation, measure, windows) -%}
    {%- for days in windows %}
        {{ relation }}.{{ measure }}_{{ days }}d,
    {%- endfor %}
{%- endmacro %}

{#- Largest `measure` over the `days` days before the as-of date (null without any). -#}
{% macro days_max(measure, days) -%}
    max(d.{{ measure }}) filter (where d.activity_date >= t.as_of_date - {{ days }})
{%- endmacro %}

{#- How many rows, this one included, fall in the `minutes` up to it (in `order_by` time within
    `partition_by`): the largest over a partition is the most in any such window. The one
    count of events in a sliding window of minutes: segments' `count ... within_minutes` and the
    micro-behavior mart's article sequences (sessions_within_hours counts sessions, forward). -#}
{% macro count_in_trailing_minutes(partition_by, order_by, minutes) -%}
    count(*) over (
        partition by {{ partition_by }} order by {{ order_by }}
        range between interval '{{ minutes | int }} minutes' preceding and current row
    )
{%- endmacro %}

{#- The earliest `at` from this row on (`order_by` within `partition_by`, which must order by
    `at` first) of a row where `condition` holds, or null: the checkout after a cart add, for
    segments' `not_followed_by` and the micro-behavior mart's abandoned carts. -#}
{% macro next_at_where(condition, at, partition_by, order_by) -%}
    min(case when {{ condition }} then {{ at }} end) over (
        partition by {{ partition_by }} order by {{ order_by }}
        rows between current row and unbounded following
    )
{%- endmacro %}

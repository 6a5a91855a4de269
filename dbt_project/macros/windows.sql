{#- Sum of `measure` over the `days` days before the as-of date, over the rows of a features
    query's calendar (person_id, as_of_date, day_number, and the facts of the day before each
    as-of date). A full build's as-of dates are a frame of their person's rows (days_frame);
    a night's, a few a person, are grouped with the rows of their lookback, each row's
    day_number beside the as-of date's target_day_number (frames over a 10M-event night's
    170k rows took 0.74 s, the join 0.09 s). Counts stay BIGINT (DuckDB would widen their
    sums to HUGEINT). -#}
{% macro days_sum(measure, days, data_type='bigint') -%}
    cast(coalesce({{ days_aggregate('sum', measure, days) }}, 0) as {{ data_type }})
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
    {{ days_aggregate('max', measure, days) }}
{%- endmacro %}

{#- `function` of `measure` over the `days` days before the as-of date (see days_sum). -#}
{% macro days_aggregate(function, measure, days) -%}
    {%- if is_incremental() -%}
    {{ function }}({{ measure }}) filter (where day_number > target_day_number - {{ days }})
    {%- else -%}
    {{ function }}({{ measure }}) over {{ days_frame(days) }}
    {%- endif -%}
{%- endmacro %}

{#- The as-of dates of `days` days up to this one (whose rows hold the facts of the days
    before them): day_number counts days, so the frame is in days whatever rows are missing. -#}
{% macro days_frame(days) -%}
    (partition by person_id order by day_number range between {{ days - 1 }} preceding and current row)
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

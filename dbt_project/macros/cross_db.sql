{#- What DuckDB and Spark SQL spell differently, one macro each (adapter.dispatch: default__ is
    DuckDB's spelling, spark__ Spark's). Everything else in the models is SQL both accept;
    dbt's own cross-database macros (dbt.datediff, ...) are used where they exist. -#}

{#- The text at a JSON path ('$.a.b') of a JSON column, or with `key` (an SQL expression)
    the member of that name of the object at the path; null when absent. -#}
{% macro json_text(column, path, key=none) -%}
    {{ return(adapter.dispatch('json_text')(column, path, key)) }}
{%- endmacro %}
{% macro default__json_text(column, path, key) -%}
    {%- if key is none -%}
    ({{ column }} ->> '{{ path }}')
    {%- else -%}
    (({{ column }} -> '{{ path }}') ->> {{ key }})
    {%- endif -%}
{%- endmacro %}
{% macro spark__json_text(column, path, key) -%}
    {%- if key is none -%}
    get_json_object({{ column }}, '{{ path }}')
    {%- else -%}
    get_json_object({{ column }}, concat('{{ path }}[\'', {{ key }}, '\']'))
    {%- endif -%}
{%- endmacro %}

{#- The keys of the JSON object at a path, one row each (a table function in a select list);
    rows whose value there is not an object have none (filter with is_json_object). -#}
{% macro json_object_keys(column, path) -%}
    {{ return(adapter.dispatch('json_object_keys')(column, path)) }}
{%- endmacro %}
{% macro default__json_object_keys(column, path) -%}
    unnest(json_keys({{ column }}, '{{ path }}'))
{%- endmacro %}
{% macro spark__json_object_keys(column, path) -%}
    explode(json_object_keys(get_json_object({{ column }}, '{{ path }}')))
{%- endmacro %}

{% macro is_json_object(column, path) -%}
    {{ return(adapter.dispatch('is_json_object')(column, path)) }}
{%- endmacro %}
{% macro default__is_json_object(column, path) -%}
    (json_type({{ column }}, '{{ path }}') = 'OBJECT')
{%- endmacro %}
{% macro spark__is_json_object(column, path) -%}
    coalesce(left(ltrim(get_json_object({{ column }}, '{{ path }}')), 1) = '{', false)
{%- endmacro %}

{#- Seconds (a double, fractions kept) from timestamp `start` to timestamp `end`. -#}
{% macro seconds_between(start, end) -%}
    {{ return(adapter.dispatch('seconds_between')(start, end)) }}
{%- endmacro %}
{% macro default__seconds_between(start, end) -%}
    epoch({{ end }} - {{ start }})
{%- endmacro %}
{% macro spark__seconds_between(start, end) -%}
    (cast(unix_micros({{ end }}) - unix_micros({{ start }}) as double) / 1000000)
{%- endmacro %}

{#- Seconds since 1970 of a timestamp (a double, fractions kept). -#}
{% macro epoch_seconds(ts) -%}
    {{ return(adapter.dispatch('epoch_seconds')(ts)) }}
{%- endmacro %}
{% macro default__epoch_seconds(ts) -%}
    epoch({{ ts }})
{%- endmacro %}
{% macro spark__epoch_seconds(ts) -%}
    (cast(unix_micros({{ ts }}) as double) / 1000000)
{%- endmacro %}

{#- A timestamp as text, to the microsecond (2026-10-01T10:00:00.000000): ids hashed from it
    are the same on every engine. -#}
{% macro timestamp_text(ts) -%}
    {{ return(adapter.dispatch('timestamp_text')(ts)) }}
{%- endmacro %}
{% macro default__timestamp_text(ts) -%}
    strftime({{ ts }}, '%Y-%m-%dT%H:%M:%S.%f')
{%- endmacro %}
{% macro spark__timestamp_text(ts) -%}
    date_format({{ ts }}, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")
{%- endmacro %}

{#- The sorted list of an aggregate's values (`condition`: an aggregate filter, or none). -#}
{% macro sorted_list(expression, condition='true') -%}
    {{ return(adapter.dispatch('sorted_list')(expression, condition)) }}
{%- endmacro %}
{% macro default__sorted_list(expression, condition) -%}
    list_sort(list({{ expression }}) filter (where {{ condition }}))
{%- endmacro %}
{% macro spark__sorted_list(expression, condition) -%}
    array_sort(collect_list({{ expression }}) filter (where {{ condition }}))
{%- endmacro %}

{% macro empty_list() -%}
    {{ return(adapter.dispatch('empty_list')()) }}
{%- endmacro %}
{% macro default__empty_list() -%}
    []
{%- endmacro %}
{% macro spark__empty_list() -%}
    array()
{%- endmacro %}

{#- An aggregate: the distinct values, sorted and joined with ', '. -#}
{% macro distinct_text_list(expression) -%}
    {{ return(adapter.dispatch('distinct_text_list')(expression)) }}
{%- endmacro %}
{% macro default__distinct_text_list(expression) -%}
    string_agg(distinct {{ expression }}, ', ' order by {{ expression }})
{%- endmacro %}
{% macro spark__distinct_text_list(expression) -%}
    array_join(array_sort(collect_set({{ expression }})), ', ')
{%- endmacro %}

{#- How many items a list has (0 for null). -#}
{% macro list_length(list) -%}
    {{ return(adapter.dispatch('list_length')(list)) }}
{%- endmacro %}
{% macro default__list_length(list) -%}
    coalesce(len({{ list }}), 0)
{%- endmacro %}
{% macro spark__list_length(list) -%}
    cast(case when {{ list }} is null then 0 else size({{ list }}) end as bigint)
{%- endmacro %}

{#- The previous row's non-null value of `expression` (then `over (...)`). -#}
{% macro lag_ignoring_nulls(expression) -%}
    {{ return(adapter.dispatch('lag_ignoring_nulls')(expression)) }}
{%- endmacro %}
{% macro default__lag_ignoring_nulls(expression) -%}
    lag({{ expression }} ignore nulls)
{%- endmacro %}
{% macro spark__lag_ignoring_nulls(expression) -%}
    lag({{ expression }}) ignore nulls
{%- endmacro %}

{#- How many words (split on single spaces) a text has (null for null: Spark's size() of
    null is -1). -#}
{% macro word_count(text) -%}
    {{ return(adapter.dispatch('word_count')(text)) }}
{%- endmacro %}
{% macro default__word_count(text) -%}
    length(string_split({{ text }}, ' '))
{%- endmacro %}
{% macro spark__word_count(text) -%}
    cast(case when {{ text }} is not null then size(split({{ text }}, ' ')) end as bigint)
{%- endmacro %}

{#- `select` list: every column of a relation but these. -#}
{% macro star_except(columns, relation='') -%}
    {{ return(adapter.dispatch('star_except')(columns, relation)) }}
{%- endmacro %}
{% macro default__star_except(columns, relation) -%}
    {{ relation ~ '.' if relation }}* exclude ({{ columns | join(', ') }})
{%- endmacro %}
{% macro spark__star_except(columns, relation) -%}
    {{ relation ~ '.' if relation }}* except ({{ columns | join(', ') }})
{%- endmacro %}

{#- `from` clause: rows of the left relation without a match (then `using (...)` or `on`). -#}
{% macro anti_join() -%}
    {{ return(adapter.dispatch('anti_join')()) }}
{%- endmacro %}
{% macro default__anti_join() -%}
    anti join
{%- endmacro %}
{% macro spark__anti_join() -%}
    left anti join
{%- endmacro %}

{#- `from` clause: each row of what precedes, once per day from `start` to `end` (dates,
    both included), the day in column `name`. -#}
{% macro each_day(start, end, name) -%}
    {{ return(adapter.dispatch('each_day')(start, end, name)) }}
{%- endmacro %}
{% macro default__each_day(start, end, name) -%}
    cross join generate_series({{ start }}, {{ end }}, interval 1 day) as days_spine({{ name }})
{%- endmacro %}
{% macro spark__each_day(start, end, name) -%}
    lateral view explode(sequence({{ start }}, {{ end }}, interval 1 day)) days_spine as {{ name }}
{%- endmacro %}

{#- A date before any event: where "since the beginning" needs a date both engines store. -#}
{% macro beginning_of_time(data_type='date') -%}
    cast('1900-01-01' as {{ data_type }})
{%- endmacro %}


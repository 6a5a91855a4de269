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
    from_json(get_json_object({{ column }}, '{{ path }}'), 'map<string, string>')[{{ key }}]
    {%- endif -%}
{%- endmacro %}

{#- The members of a JSON column named in `members` as a struct of their text, parsed once:
    `members` maps each name to 'text', or to the members of the object of that name
    ({'purposes': {'personalization': 'text'}}); absent ones are null. A json_text per member
    parses the column again for each (12 members: 3.8 s against 0.9 s on 10M events). -#}
{% macro json_texts(column, members) -%}
    {{ return(adapter.dispatch('json_texts')(column, members)) }}
{%- endmacro %}
{% macro default__json_texts(column, members) -%}
    json_transform({{ column }}, '{{ tojson(json_transform_types(members)) }}')
{%- endmacro %}
{% macro json_transform_types(members) -%}
    {%- set types = {} -%}
    {%- for name, member in members.items() -%}
        {%- do types.update({name: 'VARCHAR' if member == 'text' else json_transform_types(member)}) -%}
    {%- endfor -%}
    {{ return(types) }}
{%- endmacro %}
{% macro spark__json_texts(column, members, prefix='$') -%}
    named_struct(
    {%- for name, member in members.items() %}
        '{{ name }}',
        {%- if member == 'text' %} get_json_object({{ column }}, '{{ prefix }}.{{ name }}')
        {%- else %} {{ spark__json_texts(column, member, prefix ~ '.' ~ name) }}
        {%- endif %}{{ ',' if not loop.last }}
    {%- endfor %})
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

{#- A window function (lag, last_value, ...) of `expression` that skips nulls, then
    `over (...)`: each engine spells IGNORE NULLS in its own place. -#}
{% macro ignoring_nulls(function, expression) -%}
    {{ return(adapter.dispatch('ignoring_nulls')(function, expression)) }}
{%- endmacro %}
{% macro default__ignoring_nulls(function, expression) -%}
    {{ function }}({{ expression }} ignore nulls)
{%- endmacro %}
{% macro spark__ignoring_nulls(function, expression) -%}
    {{ function }}({{ expression }}) ignore nulls
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

{#- Aggregates: the non-null value of `value` at the row with the smallest (first_value_by) or
    largest (last_value_by) `key` (a column, or a tuple compared in order). DuckDB's
    arg_min/arg_max skip rows whose value is null; Spark's min_by/max_by do not, so there the
    key of those rows is made null, which min_by/max_by skip. -#}
{% macro first_value_by(value, key) -%}
    {{ return(adapter.dispatch('first_value_by')(value, key)) }}
{%- endmacro %}
{% macro default__first_value_by(value, key) -%}
    arg_min({{ value }}, {{ key }})
{%- endmacro %}
{% macro spark__first_value_by(value, key) -%}
    min_by({{ value }}, case when {{ value }} is not null then {{ key }} end)
{%- endmacro %}

{% macro last_value_by(value, key) -%}
    {{ return(adapter.dispatch('last_value_by')(value, key)) }}
{%- endmacro %}
{% macro default__last_value_by(value, key) -%}
    arg_max({{ value }}, {{ key }})
{%- endmacro %}
{% macro spark__last_value_by(value, key) -%}
    max_by({{ value }}, case when {{ value }} is not null then {{ key }} end)
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
    both included), the day in column `name`; no row when `start` is after `end` (Spark's
    sequence would fail on it). -#}
{% macro each_day(start, end, name) -%}
    {{ return(adapter.dispatch('each_day')(start, end, name)) }}
{%- endmacro %}
{% macro default__each_day(start, end, name) -%}
    cross join generate_series({{ start }}, {{ end }}, interval 1 day) as days_spine({{ name }})
{%- endmacro %}
{% macro spark__each_day(start, end, name) -%}
    lateral view explode(
        if({{ start }} <= {{ end }}, sequence({{ start }}, {{ end }}, interval 1 day),
           cast(array() as array<date>))
    ) days_spine as {{ name }}
{%- endmacro %}

{#- A select: each row of `targets` (person_id, as_of_date) with `columns` of the person's
    latest row of `days` (person_id, activity_date) dated before its as-of date (nulls without
    one). DuckDB has an ASOF join for it; on Spark each day stands for the as-of dates after
    it up to the person's next day. -#}
{% macro latest_day_before(targets, days, columns) -%}
    {{ return(adapter.dispatch('latest_day_before')(targets, days, columns)) }}
{%- endmacro %}
{% macro default__latest_day_before(targets, days, columns) -%}
    select t.person_id, t.as_of_date{% for c in columns %}, d.{{ c }}{% endfor %}
    from {{ targets }} as t
    asof left join {{ days }} as d
        on d.person_id = t.person_id and t.as_of_date > d.activity_date
{%- endmacro %}
{% macro spark__latest_day_before(targets, days, columns) -%}
    select t.person_id, t.as_of_date{% for c in columns %}, d.{{ c }}{% endfor %}
    from {{ targets }} as t
    left join (
        select
            *, lead(activity_date) over (partition by person_id order by activity_date) as next_date
        from {{ days }} as days
    ) as d
        on d.person_id = t.person_id
       and t.as_of_date > d.activity_date
       and (d.next_date is null or t.as_of_date <= d.next_date)
{%- endmacro %}

{#- A moment before any event (DuckDB's '-infinity' has no Spark spelling): where "since the
    beginning" is compared with event times. -#}
{% macro beginning_of_time(data_type='date') -%}
    cast('0001-01-01' as {{ data_type }})
{%- endmacro %}


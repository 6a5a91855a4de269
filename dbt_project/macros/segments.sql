{#- The validated segment plan: a JSON file that `microseg segments` writes (var
    `segment_plan_file`), read through DuckDB so that any Unicode and any number of segments
    reach dbt (a plan passed on the command line met YAML quoting and the argument limit).
    Empty while dbt parses, and when no plan file is given. -#}
{% macro segment_plan() -%}
    {%- set path = var('segment_plan_file') -%}
    {%- if not execute or not path -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set read = "select content from read_text('" ~ (path | replace("'", "''")) ~ "')" -%}
    {{ return(fromjson(run_query(read).columns[0].values()[0])) }}
{%- endmacro %}

{#- Render the segment plan (segment_plan(), validated by microseg/segments.py) into SQL.
    Identifiers are re-checked here and values rendered as literals with quotes doubled, so
    even a plan passed to dbt by hand cannot inject SQL. -#}

{% macro segment_identifier(name) -%}
    {%- if name is not string or not modules.re.fullmatch('[a-z_][a-z0-9_]{0,62}', name) -%}
        {{ exceptions.raise_compiler_error('segment plan: invalid identifier ' ~ name) }}
    {%- endif -%}
    {{ name }}
{%- endmacro %}

{% macro segment_literal(value) -%}
    {%- if value is sameas true -%} true
    {%- elif value is sameas false -%} false
    {%- elif value is number -%} {{ value }}
    {%- elif value is string -%} '{{ value | replace("'", "''") }}'
    {%- else -%} {{ exceptions.raise_compiler_error('segment plan: unsupported value ' ~ value) }}
    {%- endif -%}
{%- endmacro %}

{% macro segment_operator(op) -%}
    {%- if op not in ['>', '>=', '<', '<=', '=', '<>'] -%}
        {{ exceptions.raise_compiler_error('segment plan: invalid operator ' ~ op) }}
    {%- endif -%}
    {{ op }}
{%- endmacro %}

{#- `value op literal`, false when the value is null (a missing fact never qualifies). -#}
{% macro segment_comparison(value_sql, op, value) -%}
    coalesce({{ value_sql }} {{ segment_operator(op) }} {{ segment_literal(value) }}, false)
{%- endmacro %}

{% macro segment_filters(filters, alias) -%}
    {%- for f in filters %} and {{ segment_comparison(alias ~ '.' ~ segment_identifier(f['column']), f['op'], f['value']) }}{% endfor -%}
{%- endmacro %}

{#- A condition tree over leaf and block columns of one row: all / any / not / ref. -#}
{% macro segment_condition(node, leaves) -%}
    {%- if 'all' in node or 'any' in node -%}
        {%- set joiner = ' and ' if 'all' in node else ' or ' -%}
        ({% for child in node.get('all', node.get('any')) %}{{ segment_condition(child, leaves) }}{{ joiner if not loop.last }}{% endfor %})
    {%- elif 'not' in node -%}
        (not {{ segment_condition(node['not'], leaves) }})
    {%- elif node['ref'] in leaves -%}
        {%- set leaf = leaves[node['ref']] -%}
        {{ segment_comparison(segment_identifier(leaf['id']), leaf['op'], leaf['value']) }}
    {%- else -%}
        coalesce({{ segment_identifier(node['ref']) }}, false)
    {%- endif -%}
{%- endmacro %}

{#- One CTE body per leaf: (session_id | person_id, value). `scope` is the block's session CTE
    for session leaves; person leaves read the as-of relations directly. -#}
{% macro segment_leaf_sql(leaf, scope, as_of) -%}
    {%- set subject = leaf['subject'] -%}
    {%- if subject == 'feature' -%}
        select person_id, {{ segment_identifier(leaf['column']) }} as value from features
    {%- elif subject == 'score' -%}
        select person_id, score as value from scores
        where model_name = {{ segment_literal(leaf['model']) }}
    {%- elif subject == 'cluster' -%}
        select person_id, cluster_label as value from clusters
    {%- elif subject == 'since_last_event' -%}
        select person_id,
               date_diff('second', max(event_at), {{ as_of }}) / {{ leaf['seconds_per_unit'] | int }} as value
        from events
        group by all
    {%- elif subject == 'sessions_within_hours' -%}
        select person_id, max(sessions_in_window) as value
        from (
            select person_id,
                   count(*) over (
                       partition by person_id order by session_start_at
                       range between current row and interval '{{ leaf['hours'] | int }} hours' following
                   ) as sessions_in_window
            from final_sessions
            where session_start_at >= {{ as_of }} - interval '{{ leaf['within_days'] | int }} days'
        )
        group by all
    {%- elif subject == 'session' -%}
        select session_id, {{ segment_identifier(leaf['column']) }} as value from {{ scope }}
    {%- elif subject == 'dwell' -%}
        select page_views.session_id, max(page_views.dwell_s) as value
        from page_views
        where page_views.session_id in (select session_id from {{ scope }})
            {{- segment_filters(leaf['filters'], 'page_views') }}
        {%- if leaf.get('without') %}
            and page_views.page_view_id not in (
                select page_view_id from events
                where event_type = {{ segment_literal(leaf['without']) }} and page_view_id is not null
            )
        {%- endif %}
        group by all
    {%- elif subject == 'count' and leaf.get('not_followed_by') -%}
        select session_id, count(*) as value
        from (
            select
                events.*,
                first_value(case when event_type = {{ segment_literal(leaf['not_followed_by']) }} then event_at end ignore nulls)
                    over (partition by person_id order by event_at, event_id
                          rows between current row and unbounded following) as next_follow_at
            from events
            where person_id in (select person_id from {{ scope }})
              and (event_type = {{ segment_literal(leaf['not_followed_by']) }}
                   or (event_type = {{ segment_literal(leaf['event_type']) }}
                       {{- segment_filters(leaf['filters'], 'events') }}))
        )
        where event_type = {{ segment_literal(leaf['event_type']) }}
          and session_id in (select session_id from {{ scope }})
          and (next_follow_at is null
               or next_follow_at > event_at + interval '{{ leaf['within_minutes'] | int }} minutes')
        group by all
    {%- elif subject == 'count' and leaf.get('within_minutes') -%}
        select session_id, max(events_in_window) as value
        from (
            select session_id,
                   count(*) over (
                       partition by session_id order by event_at
                       range between current row and interval '{{ leaf['within_minutes'] | int }} minutes' following
                   ) as events_in_window
            from events
            where session_id in (select session_id from {{ scope }})
              and event_type = {{ segment_literal(leaf['event_type']) }}
              {{- segment_filters(leaf['filters'], 'events') }}
        )
        group by all
    {%- elif subject == 'count' -%}
        select session_id, count(*) as value
        from events
        where session_id in (select session_id from {{ scope }})
          and event_type = {{ segment_literal(leaf['event_type']) }}
          {{- segment_filters(leaf['filters'], 'events') }}
        group by all
    {%- else -%}
        {{ exceptions.raise_compiler_error('segment plan: unknown condition ' ~ subject) }}
    {%- endif -%}
{%- endmacro %}

{#- `union all` of many selects, nested in groups: DuckDB's binder nests a flat chain of unions
    one level per union and stops at its expression depth (1,000 segments reached it). -#}
{% macro union_all_nested(selects, group_size=100) -%}
    {%- for group in selects | batch(group_size) %}
    select * from (
        {{ group | join('\n        union all\n        ') }}
    )
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
{%- endmacro %}

{#- pre_hooks of the incremental segment models: a run replaces its own as-of date. -#}
{% macro delete_segment_date() -%}
    {%- if is_incremental() -%}
    delete from {{ this }} where as_of_date = date '{{ var("segment_as_of") }}'
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- Consent first: someone who opted out leaves every date of the membership table. So do the
    rows of an identity that no longer exists (a device's anonymous person merged into a
    logged-in one): they could otherwise outlive that person's opt-out. -#}
{% macro delete_opted_out_members() -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where person_id not in (
        select person_id from {{ ref('dim_persons') }} where is_opted_out is not true
    )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- The validated segment plan of `microseg segments` (the trigger plan of `microseg
    activate`: `trigger_plan`), a run value (macros/run_values.sql); empty while dbt parses. -#}
{% macro segment_plan(name='segment_plan') -%}
    {{ return(run_value(name) or []) }}
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
{% macro segment_condition(node, leaves, prefix='') -%}
    {%- if 'all' in node or 'any' in node -%}
        {%- set joiner = ' and ' if 'all' in node else ' or ' -%}
        ({% for child in node.get('all', node.get('any')) %}{{ segment_condition(child, leaves, prefix) }}{{ joiner if not loop.last }}{% endfor %})
    {%- elif 'not' in node -%}
        (not {{ segment_condition(node['not'], leaves, prefix) }})
    {%- elif node['ref'] in leaves -%}
        {%- set leaf = leaves[node['ref']] -%}
        coalesce({{ segment_identifier(leaf['id']) }} {{ segment_operator(leaf['op']) }} {{ segment_threshold(leaf, prefix) }}, false)
    {%- else -%}
        coalesce({{ segment_identifier(node['ref']) }}, false)
    {%- endif -%}
{%- endmacro %}

{#- The value a comparison is against: a literal, or for a baseline threshold
    ({percentile, baseline_days}: triggers) the CTE `<prefix><leaf id>_baseline` computed
    beside it. -#}
{% macro segment_threshold(leaf, prefix='') -%}
    {%- if leaf['value'] is mapping -%}
        (select threshold from {{ prefix }}{{ segment_identifier(leaf['id']) }}_baseline)
    {%- else -%}
        {{ segment_literal(leaf['value']) }}
    {%- endif -%}
{%- endmacro %}

{#- How many counted events make `count op threshold` true (for > and >=, which a growing
    count reaches once and keeps); none for the other comparisons. -#}
{% macro segment_reach(leaf, threshold) -%}
    {%- if leaf['op'] == '>=' -%} ceil({{ threshold }})
    {%- elif leaf['op'] == '>' -%} floor({{ threshold }}) + 1
    {%- endif -%}
{%- endmacro %}

{#- One CTE body per leaf: (session_id | person_id, value). `scope` is the block's session CTE
    for session leaves; person leaves read the as-of relations directly. With `threshold` (the
    SQL of the value compared with), session leaves also return `met_at`: the moment in the
    session at which the comparison became true (the n-th event, the end of an n-minute wait
    without the follow-up, the dwell passing the threshold), which triggers fire at; null when
    the moment is the session's end (a session column, a comparison like < that only the whole
    session can decide). -#}
{% macro segment_leaf_sql(leaf, scope, as_of, threshold=none) -%}
    {%- set subject = leaf['subject'] -%}
    {%- set reach = segment_reach(leaf, threshold) if threshold is not none else '' -%}
    {%- set met = reach | trim != '' -%}
    {%- if subject == 'feature' -%}
        select person_id, {{ segment_identifier(leaf['column']) }} as value from features
    {%- elif subject == 'score' -%}
        {#- the score to act on: faded by the spec's decay_half_life_days, if it has one -#}
        select person_id, coalesce(decayed_score, score) as value from scores
        where model_name = {{ segment_literal(leaf['model']) }}
    {%- elif subject == 'cluster' -%}
        select person_id, cluster_label as value from clusters
    {%- elif subject == 'since_last_event' -%}
        {#- sessions ended before the run date end with an event; they outlive raw retention -#}
        select person_id,
               date_diff('second', max(last_at), {{ as_of }}) / {{ leaf['seconds_per_unit'] | int }} as value
        from (
            select person_id, event_at as last_at from events
            union all
            select person_id, session_end_at from {{ ref('fct_sessions') }}
            where session_end_at < {{ as_of }}
        )
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
        select session_id, {{ segment_identifier(leaf['column']) }} as value
            {%- if threshold is not none %}, null::timestamp as met_at{% endif %}
        from {{ scope }}
    {%- elif subject == 'dwell' -%}
        select page_views.session_id, max(page_views.dwell_s) as value
            {%- if threshold is not none %},
            {% if met -%}
            min(page_views.page_view_at + to_microseconds((1000000 * {{ threshold }})::bigint))
                filter (where page_views.dwell_s {{ segment_operator(leaf['op']) }} {{ threshold }})
            {%- else %}null::timestamp{% endif %} as met_at
            {%- endif %}
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
        {#- each counted event qualifies `within_minutes` after it, if no follow-up came -#}
        select session_id, count(*) as value
            {%- if threshold is not none %},
            {% if met %}max(qualified_at) filter (where nth = {{ reach }}){% else %}null::timestamp{% endif %} as met_at
            {%- endif %}
        from (
            select
                session_id,
                event_at + interval '{{ leaf['within_minutes'] | int }} minutes' as qualified_at,
                row_number() over (partition by session_id order by event_at, event_id) as nth
            from (
                select
                    events.*,
                    {{ next_at_where("event_type = " ~ segment_literal(leaf['not_followed_by']), 'event_at',
                                     'person_id', 'event_at, event_id') }} as next_follow_at
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
        )
        group by all
    {%- elif subject == 'count' and not leaf.get('within_minutes') and threshold is none -%}
        select session_id, count(*) as value
        from events
        where session_id in (select session_id from {{ scope }})
          and event_type = {{ segment_literal(leaf['event_type']) }}
          {{- segment_filters(leaf['filters'], 'events') }}
        group by all
    {%- elif subject == 'count' -%}
        {#- events_so_far: counted events up to each one (within the trailing window when
            within_minutes is set: the most in any m-minute window is the largest of these) -#}
        select session_id,
               {% if leaf.get('within_minutes') %}max(events_so_far){% else %}count(*){% endif %} as value
            {%- if threshold is not none %},
            {% if met %}min(event_at) filter (where events_so_far >= {{ reach }}){% else %}null::timestamp{% endif %} as met_at
            {%- endif %}
        from (
            select session_id, event_at,
                   {% if leaf.get('within_minutes') -%}
                   {{ count_in_trailing_minutes('session_id', 'event_at', leaf['within_minutes']) }}
                   {%- else -%}
                   count(*) over (
                       partition by session_id order by event_at
                       rows between unbounded preceding and current row
                   )
                   {%- endif %} as events_so_far
            from events
            where session_id in (select session_id from {{ scope }})
              and event_type = {{ segment_literal(leaf['event_type']) }}
              {{- segment_filters(leaf['filters'], 'events') }}
        )
        group by all
    {%- else -%}
        {{ exceptions.raise_compiler_error('segment plan: unknown condition ' ~ subject) }}
    {%- endif -%}
{%- endmacro %}

{#- The moment a session condition tree became true in the session (null if it did not):
    all -> the last of its parts, any -> the first, a leaf -> its met_at (the session's end when
    only the whole session decides), not -> the session's start (it held throughout). Columns
    of one row of a per-session relation: <leaf id> and <leaf id>_at. -#}
{% macro segment_moment(node, leaves, prefix='') -%}
    {%- if 'all' in node -%}
        case when {% for child in node['all'] %}({{ segment_moment(child, leaves, prefix) }}) is not null{{ ' and ' if not loop.last }}{% endfor %}
             then greatest({% for child in node['all'] %}{{ segment_moment(child, leaves, prefix) }}{{ ', ' if not loop.last }}{% endfor %}) end
    {%- elif 'any' in node -%}
        least({% for child in node['any'] %}{{ segment_moment(child, leaves, prefix) }}{{ ', ' if not loop.last }}{% endfor %})
    {%- elif 'not' in node -%}
        case when {{ segment_condition(node, leaves, prefix) }} then session_start_at end
    {%- else -%}
        {%- set leaf = leaves[node['ref']] -%}
        case when {{ segment_condition(node, leaves, prefix) }}
             then coalesce({{ segment_identifier(leaf['id']) }}_at, session_end_at) end
    {%- endif -%}
{%- endmacro %}

{#- A member's relevance on the as-of date: exp(-ln 2 * age / half-life), the age counted from
    the end of the latest session of a block that held for them (segments.yml `decay`); 1
    without a decay, or when only person conditions qualified them (nothing to age). -#}
{% macro segment_relevance(segment, as_of) -%}
    {%- if segment.get('decay') -%}
        coalesce(exp(-ln(2) * epoch({{ as_of }}::timestamp - greatest(
            {%- for block in segment['blocks'] %}case when {{ segment_identifier(block['id']) }} then {{ segment_identifier(block['id']) }}_last_at end{{ ', ' if not loop.last }}{% endfor -%}
        )) / {{ segment['decay']['half_life_days'] * 86400 }}), 1.0)
    {%- else -%}
        1.0::double
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
    delete from {{ this }} where as_of_date = date '{{ run_value("segment_as_of") }}'
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- Consent first: someone who withdrew consent for the segments' purpose leaves every date of
    the membership table. (The rows of a person merged into another moved to the survivor when
    the identities were built: int_person_aliases.) -#}
{% macro delete_unconsented_members() -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where not {{ has_consent('person_id', consent_purpose_of('segments'), 'as_of_date',
                             ref('consent_periods')) }}
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

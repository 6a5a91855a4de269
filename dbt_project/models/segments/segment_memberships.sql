{#- One row per person, segment and as_of_date: who is in each segment defined in segments.yml
    on the run's as-of date, and the evidence (the values of every condition). Rendered from the
    plan that `microseg segments` validates and passes as var `segments` (macros/segments.sql).
    Each run replaces its own as-of date only: earlier dates keep what they said then, which is
    the membership history. Consent first: people without consent for the segments' purpose
    (var consent_purpose_of) on the as-of date, or now, are in no segment, and a withdrawal
    removes the person from every earlier date too (pre_hook). -#}
{{ config(materialized='incremental', full_refresh=false, on_schema_change='append_new_columns',
          pre_hook=["{{ delete_segment_date() }}", "{{ delete_unconsented_members() }}"]) }}

{%- if execute and not run_value('segment_as_of') %}
    {{ exceptions.raise_compiler_error('segment models need the run value segment_as_of: run `microseg segments`') }}
{%- endif %}
{%- set segments = segment_plan() %}
{%- set segments_per_query = 25 %}
{%- set as_of = "date '" ~ run_value('segment_as_of') ~ "'" %}
{%- set uses = {'score': false, 'cluster': false} %}
{%- for segment in segments %}{% for leaf in segment['person_leaves'] if leaf['subject'] in uses %}
    {%- do uses.update({leaf['subject']: true}) %}
{%- endfor %}{% endfor %}

with

features as (
    select * from {{ ref('fct_user_features_daily') }}
    where as_of_date = {{ as_of }}
),

final_sessions as (
    -- sessions that could no longer grow before the as-of date (as fct_user_features_daily)
    select * from {{ ref('fct_sessions') }}
    where session_end_at + interval '{{ var("session_timeout_minutes") }} minutes' < {{ as_of }}
),

events as (
    select * from {{ ref('int_events_paged') }}
    where event_at < {{ as_of }}
),

page_views as (
    select * from {{ ref('fct_page_views') }}
    where page_view_at < {{ as_of }}
),

{%- if uses['score'] %}

scores as (
    select * from {{ source('ml', 'user_scores') }}
    where as_of_date = {{ as_of }}
),
{%- endif %}
{%- if uses['cluster'] %}

clusters as (
    select * from {{ source('ml', 'person_clusters') }}
    where as_of_date = {{ as_of }}
),
{%- endif %}

candidates as (
    {#- Segments go in groups, each one subquery with its own CTEs: DuckDB nests a plan level
        per CTE, and one flat WITH of 1,000 segments exceeded its expression depth. #}
    {%- for chunk in segments | batch(segments_per_query) %}
    {%- set chunk_index = loop.index0 %}
    select * from (
    with
{%- for segment in chunk %}
{%- set s = 's' ~ (chunk_index * segments_per_query + loop.index0) ~ '_' %}
{%- set leaves = {} %}

{#- session blocks: each leaf per session, then the block per person -#}
{%- for block in segment['blocks'] %}
{%- set b = s ~ segment_identifier(block['id']) %}

{{ b }}_sessions as (
    select * from final_sessions
    where session_start_at >= {{ as_of }} - interval '{{ block['within_days'] | int }} days'
),
{%- for leaf in block['leaves'] %}
{%- do leaves.update({leaf['id']: leaf}) %}

{{ s }}{{ segment_identifier(leaf['id']) }} as (
    {{ segment_leaf_sql(leaf, b ~ '_sessions', as_of) }}
),
{%- endfor %}

{{ b }}_per_session as (
    select
        sessions.person_id,
        sessions.session_id,
        sessions.session_start_at,
        sessions.session_end_at
        {%- for leaf in block['leaves'] %}
        {%- set l = segment_identifier(leaf['id']) %},
        {% if leaf['subject'] == 'count' %}coalesce({{ s }}{{ l }}.value, 0){% else %}{{ s }}{{ l }}.value{% endif %} as {{ l }}
        {%- endfor %}
    from {{ b }}_sessions as sessions
    {%- for leaf in block['leaves'] %}
    left join {{ s }}{{ segment_identifier(leaf['id']) }} using (session_id)
    {%- endfor %}
),

{{ b }} as (
    {%- if block['quantifier'] == 'any' %}
    -- the latest session that meets the conditions is the evidence
    select
        person_id,
        true as {{ segment_identifier(block['id']) }},
        session_end_at as {{ segment_identifier(block['id']) }}_last_at
        {%- for leaf in block['leaves'] %}, {{ segment_identifier(leaf['id']) }}{% endfor %}
    from {{ b }}_per_session
    where {{ segment_condition(block['expression'], leaves) }}
    qualify row_number() over (
        partition by person_id order by session_start_at desc, session_id desc
    ) = 1
    {%- else %}
    -- every session of the window meets the conditions; evidence: the extremes
    select
        person_id,
        bool_and({{ segment_condition(block['expression'], leaves) }}) as {{ segment_identifier(block['id']) }},
        max(session_end_at) as {{ segment_identifier(block['id']) }}_last_at
        {%- for leaf in block['leaves'] %}, max({{ segment_identifier(leaf['id']) }}) as {{ segment_identifier(leaf['id']) }}{% endfor %}
    from {{ b }}_per_session
    group by all
    {%- endif %}
),
{%- endfor %}

{#- person leaves -#}
{%- for leaf in segment['person_leaves'] %}
{%- do leaves.update({leaf['id']: leaf}) %}

{{ s }}{{ segment_identifier(leaf['id']) }} as (
    {{ segment_leaf_sql(leaf, none, as_of) }}
),
{%- endfor %}

{{ s }}values as (
    select
        features.person_id
        {%- for leaf in segment['person_leaves'] %},
        {{ s }}{{ segment_identifier(leaf['id']) }}.value as {{ segment_identifier(leaf['id']) }}
        {%- endfor %}
        {%- for block in segment['blocks'] %},
        {{ s }}{{ segment_identifier(block['id']) }}.* exclude (person_id)
        {%- endfor %}
    from features
    {%- for leaf in segment['person_leaves'] %}
    left join {{ s }}{{ segment_identifier(leaf['id']) }} using (person_id)
    {%- endfor %}
    {%- for block in segment['blocks'] %}
    left join {{ s }}{{ segment_identifier(block['id']) }} using (person_id)
    {%- endfor %}
),

{{ s }}members as (
    select
        person_id,
        {{ segment_literal(segment['name']) }} as segment_name,
        {{ segment_literal(segment['kind']) }} as segment_kind,
        {{ segment['priority'] | int }} as priority,
        {% if segment['exclusive_group'] %}{{ segment_literal(segment['exclusive_group']) }}{% else %}null{% endif %}::varchar as exclusive_group,
        {{ segment_literal(segment['definition_hash']) }} as definition_hash,
        json_object(
            {%- for key, leaf_id in segment['evidence'] %}
            {{ segment_literal(key) }}, {{ segment_identifier(leaf_id) }}{{ ',' if not loop.last }}
            {%- endfor %}
        ) as evidence,
        {{ segment_relevance(segment, as_of) }} as relevance
    from {{ s }}values
    where {{ segment_condition(segment['expression'], leaves) }}
    {%- if segment.get('decay') and segment['decay']['min_relevance'] > 0 %}
      and {{ segment_relevance(segment, as_of) }} >= {{ segment['decay']['min_relevance'] }}
    {%- endif %}
){{ ',' if not loop.last }}
{%- endfor %}
    {%- set selects = [] %}
    {%- for segment in chunk %}{% do selects.append('select * from s' ~ (chunk_index * segments_per_query + loop.index0) ~ '_members') %}{% endfor %}
    {{ selects | join('\n    union all\n    ') }}
    )
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
    {%- if not segments %}
    select null::varchar as person_id, null::varchar as segment_name, null::varchar as segment_kind,
           null::integer as priority, null::varchar as exclusive_group,
           null::varchar as definition_hash, null::json as evidence, null::double as relevance
    where false
    {%- endif %}
),

consenting as (
    select candidates.*
    from candidates
    join features using (person_id)
    where {{ has_consent('candidates.person_id', consent_purpose_of('segments'), as_of,
                         ref('consent_periods')) }}
),

exclusive as (
    -- within an exclusive group a person keeps only the highest-priority segment
    select * from consenting
    qualify exclusive_group is null
        or row_number() over (
            partition by person_id, exclusive_group order by priority desc, segment_name
        ) = 1
),

final as (
    select
        {{ as_of }} as as_of_date,
        segment_name,
        person_id,
        segment_kind,
        evidence,
        definition_hash,
        relevance
    from exclusive
)

select * from final

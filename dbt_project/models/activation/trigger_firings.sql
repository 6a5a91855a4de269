{#- One row per person, trigger and fired_at: the moment a trigger's session conditions became
    true (the add-to-cart + 15 minutes without checkout, the second hover, the fifth article),
    with the evidence and the thresholds used. Rendered from the plan `microseg activate`
    validates (triggers.yml) by the segment macros (macros/segments.sql), at most one firing per
    trigger and session. A run evaluates the window [trigger_window_start, trigger_cutoff) and
    replaces the firings in it, so a re-run or a backfill of the window writes the same rows.
    Baseline thresholds are computed as of the window's first day, over sessions before it;
    person conditions (`who`) read the latest night's features and scores. A moment at the
    session's end (session columns, comparisons only the whole session decides) is only taken
    once the session is over (its timeout passed before the cutoff). -#}
{{ config(materialized='incremental', full_refresh=false, pre_hook="{{ delete_trigger_window() }}") }}

{%- if execute and not run_value('trigger_cutoff') %}
    {{ exceptions.raise_compiler_error('trigger_firings needs the run value trigger_cutoff: run `microseg activate`') }}
{%- endif %}
{%- set triggers = segment_plan('trigger_plan') %}
{%- set cutoff = "timestamp '" ~ run_value('trigger_cutoff') ~ "'" %}
{%- set window_start = "timestamp '" ~ run_value('trigger_window_start') ~ "'" %}
{#- baselines: as of the window's first day (every look at a day, a 15-minute batch or the
    night, uses the same threshold); the person (features, scores): as of the latest night -#}
{%- set baseline_date = "(" ~ window_start ~ ")::date" %}
{%- set as_of = "date '" ~ run_value('trigger_person_as_of') ~ "'" %}
{%- set uses_scores = [] %}
{%- for trigger in triggers %}{% for leaf in trigger['person_leaves'] if leaf['subject'] == 'score' %}
    {%- do uses_scores.append(true) %}
{%- endfor %}{% endfor %}

with

scope_sessions as (
    -- every session a firing in the window can come from: a firing is at most a day after
    -- its session's last event (the longest wait a condition has is within_minutes <= 24 h)
    select * from {{ ref('fct_sessions') }}
    where session_start_at < {{ cutoff }}
      and session_end_at >= {{ window_start }} - interval 1 day
),

final_sessions as (
    -- sessions final before the run date: the baselines, and sessions_within_hours
    select * from {{ ref('fct_sessions') }}
    where session_end_at + interval '{{ var("session_timeout_minutes") }} minutes' < {{ baseline_date }}
),

events as (
    select * from {{ ref('int_events_paged') }}
    where event_at < {{ cutoff }}
),

page_views as (
    select * from {{ ref('fct_page_views') }}
    where page_view_at < {{ cutoff }}
),

features as (
    select * from {{ ref('fct_user_features_daily') }}
    where as_of_date = {{ as_of }}
),
{%- if uses_scores %}

scores as (
    select * from {{ source('ml', 'user_scores') }}
    where as_of_date = {{ as_of }}
),
{%- endif %}

fired as (
    select null::varchar as trigger_name, null::varchar as person_id, null::varchar as session_id,
           null::timestamp as fired_at, null::varchar as channel, null::integer as priority,
           null::json as evidence, null::json as thresholds, null::varchar as definition_hash
    where false
    {%- for trigger in triggers %}
    {%- set t = 't' ~ loop.index0 ~ '_' %}
    {%- set leaves = {} %}
    {%- for leaf in trigger['leaves'] + trigger['person_leaves'] %}{% do leaves.update({leaf['id']: leaf}) %}{% endfor %}
    union all
    select * from (
        with
        {%- for leaf in trigger['leaves'] if leaf['value'] is mapping %}
        {%- set l = t ~ segment_identifier(leaf['id']) %}
        {{ l }}_baseline_sessions as (
            select * from final_sessions
            where session_start_at >= {{ baseline_date }} - interval '{{ leaf['value']['baseline_days'] | int }} days'
        ),
        {{ l }}_baseline as (
            select quantile_cont(value, {{ leaf['value']['percentile'] / 100.0 }}) as threshold
            from ({{ segment_leaf_sql(leaf, l ~ '_baseline_sessions', as_of) }})
        ),
        {%- endfor %}
        {%- for leaf in trigger['leaves'] %}
        {{ t }}{{ segment_identifier(leaf['id']) }} as (
            {{ segment_leaf_sql(leaf, 'scope_sessions', as_of, segment_threshold(leaf, t)) }}
        ),
        {%- endfor %}
        {%- for leaf in trigger['person_leaves'] %}
        {{ t }}{{ segment_identifier(leaf['id']) }} as (
            {{ segment_leaf_sql(leaf, none, as_of) }}
        ),
        {%- endfor %}
        per_session as (
            select
                sessions.person_id,
                sessions.session_id,
                sessions.session_start_at,
                sessions.session_end_at
                {%- for leaf in trigger['leaves'] %}
                {%- set l = segment_identifier(leaf['id']) %},
                {% if leaf['subject'] == 'count' %}coalesce({{ t }}{{ l }}.value, 0){% else %}{{ t }}{{ l }}.value{% endif %} as {{ l }},
                {{ t }}{{ l }}.met_at as {{ l }}_at
                {%- endfor %}
                {%- for leaf in trigger['person_leaves'] %},
                {{ t }}{{ segment_identifier(leaf['id']) }}.value as {{ segment_identifier(leaf['id']) }}
                {%- endfor %}
            from scope_sessions as sessions
            {%- for leaf in trigger['leaves'] %}
            left join {{ t }}{{ segment_identifier(leaf['id']) }} using (session_id)
            {%- endfor %}
            {%- for leaf in trigger['person_leaves'] %}
            left join {{ t }}{{ segment_identifier(leaf['id']) }} using (person_id)
            {%- endfor %}
        ),
        moments as (
            select *, {{ segment_moment(trigger['when'], leaves, t) }} as fired_at
            from per_session
            where {{ segment_condition(trigger['when'], leaves, t) }}
            {%- if trigger['who'] %}
              and {{ segment_condition(trigger['who'], leaves, t) }}
            {%- endif %}
        )
        select
            {{ segment_literal(trigger['name']) }} as trigger_name,
            person_id,
            session_id,
            fired_at,
            {{ segment_literal(trigger['channel']) }} as channel,
            {{ trigger['priority'] | int }} as priority,
            json_object(
                {%- for key, leaf_id in trigger['evidence'] %}
                {{ segment_literal(key) }}, {{ segment_identifier(leaf_id) }}{{ ',' if not loop.last }}
                {%- endfor %}
            ) as evidence,
            json_object(
                {%- for key, leaf_id in trigger['evidence'] if leaves[leaf_id] in trigger['leaves'] %}
                {{ segment_literal(key) }}, {{ segment_threshold(leaves[leaf_id], t) }}{{ ',' if not loop.last }}
                {%- endfor %}
            ) as thresholds,
            {{ segment_literal(trigger['definition_hash']) }} as definition_hash
        from moments
        where fired_at >= {{ window_start }} and fired_at < {{ cutoff }}
          -- a moment that only the whole session decides waits until the session is over
          and (fired_at <> session_end_at
               or session_end_at + interval '{{ var("session_timeout_minutes") }} minutes' < {{ cutoff }})
    )
    {%- endfor %}
),

final as (
    select
        trigger_name,
        person_id,
        session_id,
        fired_at,
        channel,
        priority,
        evidence,
        thresholds,
        definition_hash
    from fired
)

select * from final

{#- One row per segment and as_of_date the segment was evaluated on, with the definition that
    was used. The membership history needs it to tell "left the segment" from "not evaluated",
    and exports cite the definition hash. Each run replaces its own as-of date. -#}
{{ config(materialized='incremental', full_refresh=false, pre_hook="{{ delete_segment_date() }}") }}

{%- set segments = segment_plan() %}

with

evaluated as (
    {%- set selects = [] %}
    {%- for segment in segments %}
    {%- do selects.append('select ' ~ segment_literal(segment['name']) ~ ' as segment_name, '
        ~ segment_literal(segment['title']) ~ ' as segment_title, '
        ~ segment_literal(segment['kind']) ~ ' as segment_kind, '
        ~ segment_literal(segment['owner']) ~ ' as owner, '
        ~ segment_literal(segment['description']) ~ ' as description, '
        ~ segment_literal(segment['definition_hash']) ~ ' as definition_hash') %}
    {%- endfor %}
    {{ union_all_nested(selects) }}
    {%- if not segments %}
    select null::varchar as segment_name, null::varchar as segment_title,
           null::varchar as segment_kind, null::varchar as owner, null::varchar as description,
           null::varchar as definition_hash
    where false
    {%- endif %}
),

final as (
    select date '{{ run_value("segment_as_of") }}' as as_of_date, *
    from evaluated
)

select * from final

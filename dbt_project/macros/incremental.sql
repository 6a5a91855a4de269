{#- Incremental runs rewrite whole sessions. Every event row that int_events_sessionized
    rewrote in this run carries the run's `batch` and the session it belonged to before
    (previous_session_id); session-grain marts delete those stale sessions first (pre_hook)
    and then insert the sessions of the batch. A full refresh simply rebuilds everything. -#}

{% macro current_batch(relation) -%}
    (select max(batch) from {{ relation }})
{%- endmacro %}

{% macro delete_stale_sessions() -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where session_id in (
        select previous_session_id from {{ ref('int_events_sessionized') }}
        where batch = {{ current_batch(ref('int_events_sessionized')) }}
          and previous_session_id is not null
    )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- In an incremental run, true for rows of the sessions rewritten in this run. -#}
{% macro in_rewritten_sessions(column='session_id') -%}
    {%- if is_incremental() -%}
    {{ column }} in (
        select session_id from {{ ref('int_events_sessionized') }}
        where batch = {{ current_batch(ref('int_events_sessionized')) }}
    )
    {%- else -%}
    true
    {%- endif -%}
{%- endmacro %}

{#- Raw retention (microseg/privacy/retention.py) deletes the events of sessions that ended
    before a horizon; the facts built from them are final. These macros keep them so. -#}

{#- The newest horizon: facts dated before it are final ('-infinity' before any expiry). -#}
{% macro retention_horizon() -%}
    (select coalesce(max(events_before), '-infinity'::date)
     from {{ source('raw', 'retention_runs') }})
{%- endmacro %}

{#- A full build reads events only; once retention has deleted some, it would rebuild the
    facts of those days from nothing. Called by the first model of the chain (stg_events). -#}
{% macro refuse_rebuild_after_retention() -%}
    {%- if execute and not is_incremental() -%}
        {%- set expired = run_query(
            "select max(events_before) from " ~ source('raw', 'retention_runs')
            ~ " where events_expired > 0").columns[0].values()[0] -%}
        {%- if expired is not none -%}
            {{ exceptions.raise_compiler_error(
                "a full refresh would rebuild sessions and features from the events kept since "
                ~ expired ~ " and lose the older ones, which retention deleted "
                ~ "(MICROSEG_RAW_RETENTION_DAYS); run without --full-refresh") }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

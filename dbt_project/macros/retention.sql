{#- Raw retention (microseg/privacy/retention.py) deletes the events of sessions that ended
    before a horizon; the facts built from them are final. These macros keep them so. -#}

{#- The newest horizon events were deleted before: facts dated before it are final
    (beginning_of_time while retention has deleted no event). -#}
{% macro retention_horizon() -%}
    (select coalesce(max(events_before), {{ beginning_of_time() }})
     from {{ source('raw', 'retention_runs') }}
     where events_expired + unbuilt_events_expired > 0)
{%- endmacro %}

{#- on-run-start: a full refresh rebuilds from the events alone; once retention has deleted
    some, it would rebuild the facts of those days from nothing. Refused, whatever is selected
    (`microseg transform --full-refresh`, a DAG run with full_refresh, plain dbt), and so is
    every build on Spark, which rebuilds its models whole each run. -#}
{% macro refuse_full_refresh_after_retention() -%}
    {%- set runs = source('raw', 'retention_runs') -%}
    {%- if execute and (flags.FULL_REFRESH or target.type == 'spark')
          and adapter.get_relation(runs.database, runs.schema, runs.identifier) -%}
        {%- set found = run_query("select " ~ retention_horizon() ~ " > " ~ beginning_of_time() ~ ", "
                                  ~ retention_horizon() ~ "::string") -%}
        {%- set horizon = found.columns[1].values()[0] -%}
        {%- if found.columns[0].values()[0] -%}
            {{ exceptions.raise_compiler_error(
                "a full refresh would rebuild sessions and features from the events kept since "
                ~ horizon ~ " and lose the older ones, which retention deleted "
                ~ "(MICROSEG_RAW_RETENTION_DAYS); "
                ~ ("the Spark target rebuilds every run: build on DuckDB"
                   if target.type == 'spark' else "run without --full-refresh")) }}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{#- on-run-start on Spark: the raw tables as external Parquet tables over the files
    `microseg transform` exported (microseg/lake.py), declared anew each run so a new column or
    a re-export is read as it is now. Nothing on DuckDB, where raw is a schema of the warehouse. -#}
{% macro register_raw_tables() -%}
    {%- if execute and target.type == 'spark' -%}
    {%- do run_query("create database if not exists raw") -%}
    {%- for node in graph.sources.values() if node.source_name == 'raw' -%}
    {%- do run_query("drop table if exists raw." ~ node.name) -%}
    {%- set folder = env_var('MICROSEG_HOME', '../data') ~ '/spark/raw/' ~ node.name -%}
    {%- do run_query("create table raw." ~ node.name ~ " using parquet location '"
                     ~ folder | replace("\\", "\\\\") | replace("'", "\\'") ~ "'") -%}
    {%- endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}

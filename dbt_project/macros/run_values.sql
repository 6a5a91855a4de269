{#- A value of this run of a step: the as-of date of `microseg segments`, the window of
    `microseg activate`, their validated plans. microseg writes them for each dbt run to a JSON
    file named by the environment variable MICROSEG_DBT_RUN_VALUES (microseg/transform.py,
    run_dbt), read through DuckDB while the models run: as vars they would change at every run
    and make dbt parse the whole project again, and a plan on the command line met YAML quoting
    and the argument limit. None while dbt parses, and when the run gave no such value. -#}
{% macro run_value(name) -%}
    {%- set path = env_var('MICROSEG_DBT_RUN_VALUES', '') if execute else '' -%}
    {%- if not path -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set read = "select content from read_text('" ~ (path | replace("'", "''")) ~ "')" -%}
    {{ return(fromjson(run_query(read).columns[0].values()[0]).get(name)) }}
{%- endmacro %}

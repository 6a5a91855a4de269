{#- The canonical value of an event field with a taxonomy (raw.event_taxonomy, written from
    the event schema): a known value or alias (case and surrounding spaces ignored) maps to its
    value, any other non-null value to the field's fallback; null stays null. The table is read
    when the model compiles and written into a CASE: a lookup per row was a correlated
    subquery, which DuckDB answered by copying every staged row (20 s of a 10M full build). -#}
{% macro canonical_value(field, column) -%}
    {%- set mapping = run_query(
          "select received_value, canonical_value from " ~ source('raw', 'event_taxonomy')
          ~ " where field = '" ~ field ~ "' order by received_value") if execute else none %}
    {%- set fallback = namespace(literal='null') %}
    case when {{ column }} is null then null else case lower(trim({{ column }}))
        {%- for received, canonical in (mapping.rows if mapping is not none else []) %}
        {%- if received is none %}{% set fallback.literal = "'" ~ (canonical | replace("'", "''")) ~ "'" %}
        {%- else %}
        when '{{ received | replace("'", "''") }}' then '{{ canonical | replace("'", "''") }}'
        {%- endif %}
        {%- endfor %}
        else {{ fallback.literal }}
    end end
{%- endmacro %}


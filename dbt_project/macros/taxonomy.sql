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
        {%- if received is none %}{% set fallback.literal = taxonomy_literal(canonical) %}
        {%- else %}
        when {{ taxonomy_literal(received) }} then {{ taxonomy_literal(canonical) }}
        {%- endif %}
        {%- endfor %}
        else {{ fallback.literal }}
    end end
{%- endmacro %}

{#- A taxonomy value as a string literal: the values come from the repository's schema, and a
    quote would be escaped differently by each engine, so one is refused. -#}
{% macro taxonomy_literal(value) -%}
    {%- if "'" in value or "\\" in value -%}
        {{ exceptions.raise_compiler_error("event taxonomy value with a quote or backslash: " ~ value) }}
    {%- endif -%}
    '{{ value }}'
{%- endmacro %}

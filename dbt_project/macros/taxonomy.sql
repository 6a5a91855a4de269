{#- The canonical value of an event field with a taxonomy (raw.event_taxonomy, written from
    the event schema): a known value or alias (case and surrounding spaces ignored) maps to its
    value, any other non-null value to the field's fallback; null stays null. -#}
{% macro canonical_value(field, column) -%}
    case when {{ column }} is not null then coalesce(
        (select t.canonical_value from {{ source('raw', 'event_taxonomy') }} as t
         where t.field = '{{ field }}' and t.received_value = lower(trim({{ column }}))),
        (select t.canonical_value from {{ source('raw', 'event_taxonomy') }} as t
         where t.field = '{{ field }}' and t.received_value is null)
    ) end
{%- endmacro %}

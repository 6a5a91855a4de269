{#- A usable identifier: trimmed, and not one of the placeholder values trackers send when
    they have no id (var identity_blocklist). -#}
{% macro usable_id(column) -%}
    case
        when lower(trim({{ column }})) not in (
            {%- for value in var('identity_blocklist') -%}
                '{{ value | replace("'", "''") }}'{{ ", " if not loop.last }}
            {%- endfor -%}
        ) then trim({{ column }})
    end
{%- endmacro %}

{#- The stable person id for a stitched identity key ('user:<id>' or 'anon:<id>'). -#}
{% macro person_id(identity_key) -%}
    'per_' || left(md5({{ identity_key }}), 24)
{%- endmacro %}

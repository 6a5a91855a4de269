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

{#- Rows of `events` with their person: by their own usable user id, else by their device's
    stitched identity (`identities`: int_identities_stitched). Rows whose only ids are
    placeholders belong to nobody we can tell apart and are left out. -#}
{% macro attributed_to_persons(events, identities) -%}
    select
        {{ events }}.*,
        coalesce(by_user.person_id, by_device.person_id) as person_id
    from {{ events }}
    left join {{ identities }} as by_user
        on by_user.id_type = 'user'
       and by_user.identifier = {{ usable_id(events ~ '.user_id') }}
    left join {{ identities }} as by_device
        on by_device.id_type = 'anonymous'
       and by_device.identifier = {{ usable_id(events ~ '.anonymous_id') }}
    where coalesce(by_user.person_id, by_device.person_id) is not null
{%- endmacro %}

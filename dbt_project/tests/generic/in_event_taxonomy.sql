{#- Values of `column_name` that are not a canonical value of `field` in the event schema
    (raw.event_taxonomy, written from microseg/schemas/event.schema.json): one row per value,
    with how many rows carry it and, with `files_from`, the landing files they came from. -#}
{% test in_event_taxonomy(model, column_name, field, files_from=none) %}
{{ config(meta={'fix': "a value outside the event schema's taxonomy of '" ~ field ~ "' reached "
    ~ "this model: map it in microseg/schemas/event.schema.json (x-taxonomy aliases of the "
    ~ "field, or its enum) or fix the sender, then run `microseg transform --full-refresh`"}) }}

with

canonical as (
    select distinct canonical_value
    from {{ source('raw', 'event_taxonomy') }}
    where field = '{{ field }}'
),

final as (
    select
        {{ column_name }} as value,
        count(*) as rows_with_value
        {%- if files_from %},
        {{ distinct_text_list(files_from) }} as files
        {%- endif %}
    from {{ model }}
    where {{ column_name }} is not null
      and {{ column_name }} not in (select canonical_value from canonical)
    group by all
)

select * from final
{% endtest %}

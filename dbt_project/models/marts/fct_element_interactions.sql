{#- One row per session and element hovered or clicked: how often, how long the pointer
    rested, and the pause between first hovering an element and then clicking it.
    Incremental: replaces the sessions rewritten in this run. -#}
{{ config(materialized='incremental', unique_key=['session_id', 'element_id'], incremental_strategy='delete+insert',
          pre_hook="{{ delete_stale_sessions() }}") }}

-- depends_on: {{ ref('int_identities_stitched') }}
-- depends_on: {{ ref('int_events_sessionized') }}

with

events as (
    select * from {{ rewritten_events() }} as paged
    where event_type in ('hover', 'click') and element_id is not null
),

per_element as (
    select
        session_id,
        element_id,
        any_value(person_id) as person_id,
        count(*) filter (where event_type = 'hover') as hovers,
        coalesce(sum(hover_ms) filter (where event_type = 'hover'), 0)::bigint as hover_ms,
        count(*) filter (where event_type = 'click') as clicks,
        min(event_at) filter (where event_type = 'hover') as first_hover_at,
        min(event_at) filter (where event_type = 'click') as first_click_at
    from events
    group by session_id, element_id
),

final as (
    select
        *,
        hovers >= 2 as is_repeated_hover,
        case when first_click_at >= first_hover_at
             then {{ seconds_between('first_hover_at', 'first_click_at') }} end as seconds_from_hover_to_click
    from per_element
)

select * from final

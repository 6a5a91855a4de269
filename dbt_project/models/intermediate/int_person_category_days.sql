{#- One row per person, activity_date and content_category: engaged seconds (heartbeats) on
    pages of that category. Incremental like int_person_days. -#}
{{ config(materialized='incremental',
          unique_key=['person_id', 'activity_date', 'content_category'],
          incremental_strategy='delete+insert',
          pre_hook="{{ delete_touched_days('activity_date') }}") }}

-- depends_on: {{ ref('int_events_stitched') }}
-- depends_on: {{ ref('int_identities_stitched') }}
-- depends_on: {{ ref('int_events_sessionized') }}

with

events as (
    select * from {{ ref('int_events_paged') }}
),

final as (
    select
        person_id,
        event_at::date as activity_date,
        content_category,
        sum({{ engaged_s() }})::bigint as engaged_s
    from {{ touched_only('events', 'event_at::date') }} as events
    where event_type = 'page_ping'
      and content_category is not null
    group by all
)

select * from final

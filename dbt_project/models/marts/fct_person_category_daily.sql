{#- One row per person, activity_date and content_category: engaged seconds on pages of that
    category that day. What content people spend their time on, day by day (the label of the
    content_preference model). Incremental: touched people from their restart day. -#}
{{ config(materialized='incremental',
          unique_key=['person_id', 'activity_date', 'content_category'],
          incremental_strategy='delete+insert',
          pre_hook="{{ delete_touched_days('activity_date') }}") }}

-- depends_on: {{ ref('int_events_stitched') }}
-- depends_on: {{ ref('int_events_sessionized') }}
-- depends_on: {{ ref('int_identities_stitched') }}

with

category_days as (
    select * from {{ touched_only(ref('int_person_category_days'), 'activity_date') }} as days
),

final as (
    select person_id, activity_date, content_category, engaged_s::bigint as engaged_s
    from category_days
)

select * from final

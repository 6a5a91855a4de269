{#- One row per person, activity_date and item (an article, a video or a product): what the
    person did with it that day, and the confidence a recommender puts in that (var
    recommendation_weights). An item is the product_id of product events and the content_id of
    article, video and product pages (a product page's content_id is its product id). Point in
    time like the features: a model trained for night D reads activity_date < D.
    Incremental: touched people from their restart day. -#}
{{ config(materialized='incremental',
          unique_key=['person_id', 'activity_date', 'item_id'],
          incremental_strategy='delete+insert',
          pre_hook="{{ delete_touched_days('activity_date') }}") }}

-- depends_on: {{ ref('int_events_stitched') }}
-- depends_on: {{ ref('int_events_sessionized') }}
-- depends_on: {{ ref('int_identities_stitched') }}

{%- set weights = var('recommendation_weights') %}

with

events as (
    select
        person_id,
        event_at::date as activity_date,
        event_type,
        coalesce(product_id, content_id) as item_id,
        case when product_id is not null then 'product' else page_type end as item_type,
        {{ engaged_s() }} as engaged_s
    from {{ touched_only(ref('int_events_paged'), 'event_at::date') }} as events
    where event_type in ('page_view', 'page_ping', 'video_complete', 'add_to_cart', 'purchase')
),

signals as (
    select
        person_id,
        activity_date,
        item_id,
        any_value(item_type) as item_type,
        count(*) filter (where event_type = 'page_view') as views,
        sum(engaged_s)::bigint as engaged_s,
        count(*) filter (where event_type = 'video_complete') as video_completions,
        count(*) filter (where event_type = 'add_to_cart') as cart_adds,
        count(*) filter (where event_type = 'purchase') as purchases
    from events
    where item_id is not null and item_type in ('article', 'video', 'product')
    group by person_id, activity_date, item_id
),

final as (
    select
        *,
        round(
            {{ weights.purchase }} * purchases
            + {{ weights.cart_add }} * cart_adds
            + {{ weights.video_completion }} * video_completions
            + {{ weights.view }} * views
            + {{ weights.engaged_minutes_log }} * ln(1 + engaged_s / 60), 4
        )::double as confidence
    from signals
)

select * from final

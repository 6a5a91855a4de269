{#- The behavior vector `microseg cluster` clusters people by: rates and shares of the 28-day
    features, so that how much someone visits and what they do on a visit are separate axes
    (counts per session on a log scale). People who visited in the 28 days before D only.
    A view: it is read one as-of date at a time. -#}
{{ config(materialized='view') }}

with

features as (
    select * from {{ ref('fct_user_features_daily') }}
    where sessions_28d > 0
),

final as (
    select
        person_id,
        as_of_date,
        ln(1 + sessions_28d) as visit_frequency,
        ln(1 + page_views_28d / sessions_28d) as pages_per_session,
        engaged_s_28d / nullif(page_views_28d, 0) as engaged_s_per_page,
        articles_read_28d / nullif(page_views_28d, 0) as article_share,
        product_views_28d / nullif(page_views_28d, 0) as product_share,
        avg_max_scroll_percent_28d as scroll_depth,
        bounce_sessions_28d / sessions_28d as bounce_rate,
        video_plays_28d / nullif(page_views_28d, 0) as video_share,
        ln(1 + searches_28d / sessions_28d) as searches_per_session,
        ln(1 + cart_adds_28d / sessions_28d) as cart_adds_per_session,
        ln(1 + purchases_28d / sessions_28d) as purchases_per_session
    from features
)

select * from final

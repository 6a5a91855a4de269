{#- One row per session: the micro-behaviors personalization keys on — hovering without
    clicking, re-reading, skimming, hesitating, quick article sequences, abandoned carts.
    Incremental: replaces the sessions rewritten in this run. -#}
{{ config(materialized='incremental', unique_key='session_id', incremental_strategy='delete+insert',
          pre_hook="{{ delete_stale_sessions() }}") }}

-- depends_on: {{ ref('int_identities_stitched') }}
-- depends_on: {{ ref('int_events_sessionized') }}

with

page_views as (
    select * from {{ ref('fct_page_views') }}
    where {{ in_rewritten_sessions() }}
),

elements as (
    select * from {{ ref('fct_element_interactions') }}
    where {{ in_rewritten_sessions() }}
),

events as (
    select * from {{ rewritten_events() }} as paged
),

sessions as (
    select * from {{ ref('fct_sessions') }}
    where {{ in_rewritten_sessions() }}
),

article_sequences as (
    select
        session_id,
        {{ count_in_trailing_minutes('session_id', 'page_view_at', var("sequence_window_minutes")) }}
            as articles_in_window
    from page_views
    where page_type = 'article'
),

carts as (
    select
        session_id,
        event_at as cart_add_at,
        -- the first checkout at or after the cart add
        {{ next_at_where("event_type = 'checkout_start'", 'event_at', 'person_id', 'event_at, event_id') }}
            as next_checkout_at
    from events
    where event_type in ('add_to_cart', 'checkout_start')
    qualify event_type = 'add_to_cart'
),

per_sequence as (
    select session_id, max(articles_in_window) as max_articles_within_window
    from article_sequences
    group by session_id
),

per_page_view as (
    select
        session_id,
        sum(subscribe_hovers)::bigint as subscribe_hovers,
        count(*) filter (where is_revisit) as page_revisits,
        count(*) filter (where is_partial_scroll) as partial_scroll_page_views,
        sum(video_plays)::bigint as video_plays,
        sum(video_completes)::bigint as video_completes,
        max(dwell_s) filter (where page_type = 'article') as max_article_dwell_s,
        max(dwell_s) filter (where page_type = 'product' and not has_cart_add)
            as max_product_dwell_without_cart_s,
        min(seconds_to_first_cta_click) as seconds_to_first_cta_click,
        max(search_query_words) as max_search_query_words
    from page_views
    group by session_id
),

per_element as (
    select
        session_id,
        max(hovers) as max_hovers_on_one_element,
        count(*) filter (where is_repeated_hover and left(element_id, 4) = 'cta_')
            as repeatedly_hovered_ctas,
        count(*) filter (where hovers > 0 and clicks = 0) as hovered_not_clicked_elements,
        median(seconds_from_hover_to_click) as median_pause_before_click_s
    from elements
    group by session_id
),

per_cart as (
    select
        session_id,
        count(*) as cart_adds,
        count(*) filter (
            where next_checkout_at is null
               or next_checkout_at > cart_add_at
                  + interval '{{ var("checkout_window_minutes") }} minutes'
        ) as cart_adds_without_checkout
    from carts
    group by session_id
),

final as (
    select
        sessions.session_id,
        sessions.person_id,
        sessions.session_start_at,
        sessions.session_end_at,
        coalesce(per_page_view.subscribe_hovers, 0) as subscribe_hovers,
        coalesce(per_element.max_hovers_on_one_element, 0) as max_hovers_on_one_element,
        coalesce(per_element.repeatedly_hovered_ctas, 0) as repeatedly_hovered_ctas,
        coalesce(per_element.hovered_not_clicked_elements, 0) as hovered_not_clicked_elements,
        per_element.median_pause_before_click_s,
        coalesce(per_page_view.page_revisits, 0) as page_revisits,
        coalesce(per_page_view.partial_scroll_page_views, 0) as partial_scroll_page_views,
        coalesce(per_page_view.video_plays, 0) as video_plays,
        per_page_view.video_completes::double / nullif(per_page_view.video_plays, 0)
            as video_completion_rate,
        coalesce(per_sequence.max_articles_within_window, 0) as max_articles_within_window,
        per_page_view.max_article_dwell_s,
        per_page_view.max_product_dwell_without_cart_s,
        per_page_view.seconds_to_first_cta_click,
        per_page_view.max_search_query_words,
        coalesce(per_cart.cart_adds, 0) as cart_adds,
        coalesce(per_cart.cart_adds_without_checkout, 0) as cart_adds_without_checkout
    from sessions
    left join per_page_view using (session_id)
    left join per_element using (session_id)
    left join per_cart using (session_id)
    left join per_sequence using (session_id)
)

select * from final

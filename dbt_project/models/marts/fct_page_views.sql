{#- One row per page view, with what happened on the page until the next page view.
    Incremental: replaces the sessions rewritten in this run (see macros/incremental.sql). -#}
{{ config(materialized='incremental', unique_key='page_view_id', incremental_strategy='delete+insert',
          pre_hook="{{ delete_stale_sessions() }}") }}

-- depends_on: {{ ref('int_identities_stitched') }}
-- depends_on: {{ ref('int_events_sessionized') }}

with

events as (
    select * from {{ rewritten_events() }} as paged
    where page_view_id is not null
),

page_events as (
    select
        page_view_id,
        any_value(session_id) as session_id,
        any_value(person_id) as person_id,
        min(event_at) filter (where event_type = 'page_view') as page_view_at,
        max(event_at) as last_event_at,
        any_value(page_view_in_session) as page_view_in_session,
        any_value(page_url) filter (where event_type = 'page_view') as page_url,
        any_value(page_type) filter (where event_type = 'page_view') as page_type,
        any_value(content_id) filter (where event_type = 'page_view') as content_id,
        any_value(content_category) filter (where event_type = 'page_view') as content_category,
        any_value(product_id) filter (where event_type = 'page_view') as product_id,
        count(*) filter (where event_type = 'page_ping') as page_pings,
        sum({{ engaged_s() }})::bigint as engaged_s,
        -- scroll marks, or the depth a page ping reports (Snowplow's offsets: docs/events.md)
        coalesce(max(scroll_percent) filter (where event_type in ('scroll', 'page_ping')), 0)
            as max_scroll_percent,
        count(*) filter (where event_type = 'hover') as hovers,
        coalesce(sum(hover_ms) filter (where event_type = 'hover'), 0)::bigint as hover_ms,
        count(*) filter (where event_type = 'hover'
                         and element_id = '{{ var("subscribe_element_id") }}')
            as subscribe_hovers,
        count(*) filter (where event_type = 'click') as clicks,
        min(event_at) filter (where event_type = 'click' and left(element_id, 4) = 'cta_')
            as first_cta_click_at,
        bool_or(event_type = 'click' and element_id = 'related_article') as clicked_related,
        count(*) filter (where event_type = 'video_play') as video_plays,
        count(*) filter (where event_type = 'video_complete') as video_completes,
        max(video_position_s) as video_max_position_s,
        max(video_duration_s) as video_duration_s,
        count(*) filter (where event_type = 'add_to_cart') as cart_adds,
        any_value(search_query) filter (where event_type = 'search') as search_query
    from events
    group by page_view_id
),

timed as (
    select
        *,
        lead(page_view_at) over (partition by session_id order by page_view_in_session)
            as next_page_view_at
    from page_events
),

final as (
    select
        page_view_id,
        session_id,
        person_id,
        page_view_in_session,
        page_view_at,
        coalesce(next_page_view_at, last_event_at) as page_view_end_at,
        {{ seconds_between('page_view_at', 'coalesce(next_page_view_at, last_event_at)') }} as dwell_s,
        engaged_s,
        page_url,
        page_type,
        content_id,
        content_category,
        product_id,
        max_scroll_percent,
        max_scroll_percent < {{ var('partial_scroll_percent') }} as is_partial_scroll,
        count(*) over (partition by session_id, page_url order by page_view_in_session
                       rows between unbounded preceding and current row) > 1 as is_revisit,
        hovers,
        hover_ms,
        subscribe_hovers,
        clicks,
        {{ seconds_between('page_view_at', 'first_cta_click_at') }} as seconds_to_first_cta_click,
        clicked_related,
        video_plays,
        video_completes,
        video_max_position_s,
        video_duration_s,
        cart_adds,
        cart_adds > 0 as has_cart_add,
        search_query,
        {{ word_count('trim(search_query)') }} as search_query_words
    from timed
)

select * from final

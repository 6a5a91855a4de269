{#- One row per person and activity_date: the facts that became final on that day.
    Event counts are dated by the event; session-level facts (bounce, intent, dwell) by the day
    the session became final (its end + session_timeout_minutes: no later event can join it);
    cart abandonment by the day its checkout window closed. fct_user_features_daily sums
    these over the days before each as-of date, which is what makes it point in time.
    Incremental: touched people are rewritten from their restart day (macros/incremental.sql). -#}
{{ config(materialized='incremental', unique_key=['person_id', 'activity_date'],
          incremental_strategy='delete+insert',
          pre_hook="{{ delete_touched_days('activity_date') }}") }}

-- depends_on: {{ ref('int_identities_stitched') }}
-- depends_on: {{ ref('int_events_stitched') }}
-- depends_on: {{ ref('int_events_sessionized') }}

with

sessions as (
    select * from {{ ref('fct_sessions') }}
),

micro as (
    select * from {{ ref('fct_session_micro_behaviors') }}
),

page_views as (
    select * from {{ ref('fct_page_views') }}
),

timeout as (
    select interval '{{ var("session_timeout_minutes") }} minutes' as value
),

event_days as (
    select
        person_id,
        event_at::date as activity_date,
        count(*) filter (where event_type = 'page_view') as page_views,
        sum({{ engaged_s() }})::bigint as engaged_s,
        count(*) filter (where event_type = 'hover') as hovers,
        coalesce(sum(hover_ms) filter (where event_type = 'hover'), 0)::bigint as hover_ms,
        count(*) filter (where event_type = 'hover'
                         and element_id = '{{ var("subscribe_element_id") }}')
            as subscribe_hovers,
        count(*) filter (where event_type = 'click') as clicks,
        count(*) filter (where event_type = 'search') as searches,
        count(*) filter (where event_type = 'video_play') as video_plays,
        count(*) filter (where event_type = 'video_complete') as video_completes,
        count(*) filter (where event_type = 'add_to_cart') as cart_adds,
        count(*) filter (where event_type = 'purchase') as purchases,
        coalesce(sum(revenue) filter (where event_type = 'purchase'), 0)::decimal(18, 4)
            as revenue,
        count(*) filter (where event_type = 'page_view' and page_type = 'product')
            as product_views,
        {{ last_value_by('consents_to_personalization', '(event_at, event_id)') }}
            filter (where event_type = 'consent' and consents_to_personalization is not null)
            as consents_to_personalization
    from {{ touched_only(ref('int_events_paged'), 'event_at::date') }} as events
    group by all
),

session_start_days as (
    select
        person_id,
        session_start_at::date as activity_date,
        count(*) as sessions,
        count(*) filter (where device_type = 'mobile') as mobile_sessions,
        count(*) filter (where device_type = 'desktop') as desktop_sessions,
        max(session_start_at) as last_session_start_at,
        {{ last_value_by('device_type', '(session_start_at, session_id)') }} as last_device_type,
        {{ last_value_by('country', '(session_start_at, session_id)') }} as last_country
    from {{ touched_only('sessions', 'session_start_at::date') }} as sessions
    group by all
),

final_sessions as (
    -- sessions whose facts are dated on a day being (re)computed
    select sessions.*, (sessions.session_end_at + timeout.value)::date as final_date
    from {{ touched_only('sessions', "(session_end_at + interval '"
                         ~ var('session_timeout_minutes') ~ " minutes')::date") }} as sessions
    cross join timeout
),

final_session_events as (
    select * from {{ ref('int_events_paged') }}
    where session_id in (select session_id from final_sessions)
),

first_searches as (
    select session_id, min(event_at) as first_search_at
    from final_session_events
    where event_type = 'search'
    group by all
),

product_views_after_search as (
    select e.session_id, min(e.event_at) as first_product_view_at
    from final_session_events as e
    join first_searches using (session_id)
    where e.event_type = 'page_view' and e.page_type = 'product'
      and e.event_at >= first_searches.first_search_at
    group by all
),

intent_sessions as (
    -- intent-driven: a search, then a product view, then a cart add, in that order
    select distinct e.session_id
    from final_session_events as e
    join product_views_after_search using (session_id)
    where e.event_type = 'add_to_cart'
      and e.event_at >= product_views_after_search.first_product_view_at
),

session_pages as (
    select
        session_id,
        count(*) filter (
            where page_type = 'article' and engaged_s >= {{ var('article_read_seconds') }}
        ) as articles_read,
        sum(max_scroll_percent) as scroll_percent_sum,
        count(*) as final_page_views
    from page_views
    where session_id in (select session_id from final_sessions)
    group by all
),

final_session_days as (
    select
        final_sessions.person_id,
        final_sessions.final_date as activity_date,
        count(*) filter (where final_sessions.is_bounce) as bounce_sessions,
        -- habitual: came back and looked around, without searching, carting or buying
        count(*) filter (where final_sessions.session_index > 1 and final_sessions.searches = 0
                         and final_sessions.cart_adds = 0 and not final_sessions.has_purchase)
            as return_visits_without_action,
        count(*) filter (where micro.subscribe_hovers >= 2)
            as sessions_with_repeated_subscribe_hovers,
        max(micro.max_articles_within_window) as max_articles_within_window,
        sum(micro.page_revisits)::bigint as page_revisits,
        sum(micro.partial_scroll_page_views)::bigint as partial_scroll_page_views,
        max(micro.max_product_dwell_without_cart_s) as max_product_dwell_without_cart_s,
        max(micro.max_article_dwell_s) as max_article_dwell_s,
        count(intent_sessions.session_id) as intent_sessions,
        coalesce(sum(session_pages.articles_read), 0)::bigint as articles_read,
        coalesce(sum(session_pages.scroll_percent_sum), 0) as scroll_percent_sum,
        coalesce(sum(session_pages.final_page_views), 0)::bigint as final_page_views
    from final_sessions
    join micro using (session_id)
    left join intent_sessions using (session_id)
    left join session_pages using (session_id)
    group by all
),

abandon_days as (
    select
        person_id,
        (session_start_at + interval '{{ var("checkout_window_minutes") }} minutes')::date
            as activity_date,
        sum(cart_adds_without_checkout)::bigint as cart_abandons
    from {{ touched_only('micro', "(session_start_at + interval '"
                         ~ var('checkout_window_minutes') ~ " minutes')::date") }} as micro
    group by all
),

keys as (
    select person_id, activity_date from event_days
    union
    select person_id, activity_date from session_start_days
    union
    select person_id, activity_date from final_session_days
    union
    select person_id, activity_date from abandon_days
),

final as (
    select
        keys.person_id,
        keys.activity_date,
        coalesce(e.page_views, 0) as page_views,
        coalesce(e.engaged_s, 0) as engaged_s,
        coalesce(e.hovers, 0) as hovers,
        coalesce(e.hover_ms, 0) as hover_ms,
        coalesce(e.subscribe_hovers, 0) as subscribe_hovers,
        coalesce(e.clicks, 0) as clicks,
        coalesce(e.searches, 0) as searches,
        coalesce(e.video_plays, 0) as video_plays,
        coalesce(e.video_completes, 0) as video_completes,
        coalesce(e.cart_adds, 0) as cart_adds,
        coalesce(e.purchases, 0) as purchases,
        coalesce(e.revenue, 0) as revenue,
        coalesce(e.product_views, 0) as product_views,
        e.consents_to_personalization,
        coalesce(s.sessions, 0) as sessions,
        coalesce(s.mobile_sessions, 0) as mobile_sessions,
        coalesce(s.desktop_sessions, 0) as desktop_sessions,
        s.last_session_start_at,
        s.last_device_type,
        s.last_country,
        coalesce(f.bounce_sessions, 0) as bounce_sessions,
        coalesce(f.return_visits_without_action, 0) as return_visits_without_action,
        coalesce(f.sessions_with_repeated_subscribe_hovers, 0)
            as sessions_with_repeated_subscribe_hovers,
        f.max_articles_within_window,
        coalesce(f.page_revisits, 0) as page_revisits,
        coalesce(f.partial_scroll_page_views, 0) as partial_scroll_page_views,
        f.max_product_dwell_without_cart_s,
        f.max_article_dwell_s,
        coalesce(f.intent_sessions, 0) as intent_sessions,
        coalesce(f.articles_read, 0) as articles_read,
        coalesce(f.scroll_percent_sum, 0) as scroll_percent_sum,
        coalesce(f.final_page_views, 0) as final_page_views,
        coalesce(b.cart_abandons, 0) as cart_abandons
    from keys
    left join event_days as e using (person_id, activity_date)
    left join session_start_days as s using (person_id, activity_date)
    left join final_session_days as f using (person_id, activity_date)
    left join abandon_days as b using (person_id, activity_date)
)

select * from final

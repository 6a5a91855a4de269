{#- One row per person and as_of_date D: behavior up to (not including) D, for segments and
    models. Point in time: a row for D only uses facts that were final before D, so adding
    events at or after D never changes it —
      event counts            events with event_at < D;
      session-level facts     sessions that started before D count in sessions_*; facts that
                              need the whole session (bounce, intent, dwell) count once the
                              session is final: its end + session_timeout_minutes < D;
      cart abandonment        once the checkout window has closed before D.
    Identity is the current stitching (a later login re-attributes a device's past), as in
    every identity-graph tool; the event facts themselves are point in time.
    Windows are spelled out in the names: _1d, _7d, _28d, _90d are the 1/7/28/90 days before D.
    As-of dates run from the day after a person is first seen to the day after the last event. -#}
with

events as (
    select * from {{ ref('int_events_sessionized') }}
),

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

-- facts, each dated by the day it became final (it counts for every D after that day)
event_days as (
    select
        person_id,
        event_at::date as activity_date,
        count(*) filter (where event_type = 'page_view') as page_views,
        count(*) filter (where event_type = 'page_ping') * {{ var('heartbeat_seconds') }}
            as engaged_s,
        count(*) filter (where event_type = 'hover') as hovers,
        coalesce(sum(hover_ms) filter (where event_type = 'hover'), 0)::bigint as hover_ms,
        count(*) filter (where event_type = 'hover' and element_id = 'cta_subscribe')
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
            as product_views
    from events
    group by all
),

session_start_days as (
    select
        person_id,
        session_start_at::date as activity_date,
        count(*) as sessions,
        count(*) filter (where device_type = 'mobile') as mobile_sessions,
        count(*) filter (where device_type = 'desktop') as desktop_sessions,
        max(session_start_at) as last_session_start_at
    from sessions
    group by all
),

final_session_days as (
    select
        sessions.person_id,
        (sessions.session_end_at + timeout.value)::date as activity_date,
        count(*) filter (where sessions.is_bounce) as bounce_sessions,
        -- habitual: came back and looked around, without searching, carting or buying
        count(*) filter (where sessions.session_index > 1 and sessions.searches = 0
                         and sessions.cart_adds = 0 and not sessions.has_purchase)
            as return_visits_without_action,
        count(*) filter (where micro.subscribe_hovers >= 2) as sessions_with_repeated_subscribe_hovers,
        max(micro.max_articles_within_window) as max_articles_within_window,
        sum(micro.page_revisits) as page_revisits,
        sum(micro.partial_scroll_page_views) as partial_scroll_page_views,
        max(micro.max_product_dwell_without_cart_s) as max_product_dwell_without_cart_s,
        max(micro.max_article_dwell_s) as max_article_dwell_s
    from sessions
    join micro using (session_id)
    cross join timeout
    group by all
),

first_searches as (
    select session_id, min(event_at) as first_search_at
    from events
    where event_type = 'search'
    group by all
),

product_views_after_search as (
    select events.session_id, min(events.event_at) as first_product_view_at
    from events
    join first_searches using (session_id)
    where events.event_type = 'page_view' and events.page_type = 'product'
      and events.event_at >= first_searches.first_search_at
    group by all
),

intent_days as (
    -- intent-driven: a search, then a product view, then a cart add, in that order
    select
        sessions.person_id,
        (sessions.session_end_at + timeout.value)::date as activity_date,
        count(distinct sessions.session_id) as intent_sessions
    from sessions
    join product_views_after_search using (session_id)
    join events
        on events.session_id = sessions.session_id
       and events.event_type = 'add_to_cart'
       and events.event_at >= product_views_after_search.first_product_view_at
    cross join timeout
    group by all
),

article_days as (
    select
        page_views.person_id,
        (sessions.session_end_at + timeout.value)::date as activity_date,
        count(*) filter (where page_views.page_type = 'article' and page_views.engaged_s >= 30)
            as articles_read,
        avg(page_views.max_scroll_percent) as avg_max_scroll_percent,
        count(*) as final_page_views
    from page_views
    join sessions using (session_id)
    cross join timeout
    group by all
),

abandon_days as (
    select
        person_id,
        (session_start_at + interval '{{ var("checkout_window_minutes") }} minutes')::date
            as activity_date,
        sum(cart_adds_without_checkout) as cart_abandons
    from micro
    group by all
),

category_days as (
    select
        person_id,
        event_at::date as activity_date,
        content_category,
        count(*) * {{ var('heartbeat_seconds') }} as engaged_s
    from events
    where event_type = 'page_ping' and content_category is not null
    group by all
),

consent_days as (
    select
        person_id,
        event_at::date as activity_date,
        arg_max(consents_to_personalization, (event_at, event_id)) as consents_to_personalization
    from events
    where event_type = 'consent' and consents_to_personalization is not null
    group by all
),

-- one row per person and as-of date
bounds as (
    select min(event_at)::date + 1 as first_as_of, max(event_at)::date + 1 as last_as_of
    from events
),

people as (
    select person_id, min(event_at)::date + 1 as first_as_of
    from events
    group by all
),

grid as (
    select people.person_id, day::date as as_of_date
    from people
    cross join bounds
    cross join generate_series(bounds.first_as_of, bounds.last_as_of, interval 1 day) as d(day)
    where day::date >= people.first_as_of
),

-- day D holds the facts of day D - 1; windows then sum the rows before and at D
daily as (
    select
        grid.person_id,
        grid.as_of_date,
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
        coalesce(s.sessions, 0) as sessions,
        coalesce(s.mobile_sessions, 0) as mobile_sessions,
        coalesce(s.desktop_sessions, 0) as desktop_sessions,
        s.last_session_start_at,
        coalesce(f.bounce_sessions, 0) as bounce_sessions,
        coalesce(f.return_visits_without_action, 0) as return_visits_without_action,
        coalesce(f.sessions_with_repeated_subscribe_hovers, 0)
            as sessions_with_repeated_subscribe_hovers,
        f.max_articles_within_window,
        coalesce(f.page_revisits, 0) as page_revisits,
        coalesce(f.partial_scroll_page_views, 0) as partial_scroll_page_views,
        f.max_product_dwell_without_cart_s,
        f.max_article_dwell_s,
        coalesce(i.intent_sessions, 0) as intent_sessions,
        coalesce(a.articles_read, 0) as articles_read,
        a.avg_max_scroll_percent * a.final_page_views as scroll_percent_sum,
        coalesce(a.final_page_views, 0) as final_page_views,
        coalesce(b.cart_abandons, 0) as cart_abandons,
        c.consents_to_personalization
    from grid
    left join event_days as e
        on e.person_id = grid.person_id and e.activity_date = grid.as_of_date - 1
    left join session_start_days as s
        on s.person_id = grid.person_id and s.activity_date = grid.as_of_date - 1
    left join final_session_days as f
        on f.person_id = grid.person_id and f.activity_date = grid.as_of_date - 1
    left join intent_days as i
        on i.person_id = grid.person_id and i.activity_date = grid.as_of_date - 1
    left join article_days as a
        on a.person_id = grid.person_id and a.activity_date = grid.as_of_date - 1
    left join abandon_days as b
        on b.person_id = grid.person_id and b.activity_date = grid.as_of_date - 1
    left join consent_days as c
        on c.person_id = grid.person_id and c.activity_date = grid.as_of_date - 1
),

favorite_categories as (
    select
        grid.person_id,
        grid.as_of_date,
        arg_max(category_totals.content_category,
                (category_totals.engaged_s, category_totals.content_category))
            as favorite_category_28d,
        max(category_totals.engaged_s) / sum(category_totals.engaged_s)
            as favorite_category_share_28d
    from grid
    join (
        select grid.person_id, grid.as_of_date, category_days.content_category,
               sum(category_days.engaged_s) as engaged_s
        from grid
        join category_days
            on category_days.person_id = grid.person_id
           and category_days.activity_date >= grid.as_of_date - 28
           and category_days.activity_date < grid.as_of_date
        group by all
    ) as category_totals
        on category_totals.person_id = grid.person_id
       and category_totals.as_of_date = grid.as_of_date
    group by all
),

windowed as (
    select
        person_id,
        as_of_date,
        {%- for days in [1, 7, 28, 90] %}
        {{ rolling_sum('sessions', days) }} as sessions_{{ days }}d,
        {%- endfor %}
        {%- for measure in ['page_views', 'engaged_s', 'hovers', 'subscribe_hovers', 'clicks',
                            'cart_adds', 'product_views'] %}
        {{ rolling_sum(measure, 7) }} as {{ measure }}_7d,
        {{ rolling_sum(measure, 28) }} as {{ measure }}_28d,
        {%- endfor %}
        {{ rolling_sum('hover_ms', 7) }} as hover_ms_7d,
        {{ rolling_sum('hover_ms', 28) }} as hover_ms_28d,
        {%- for days in [7, 28, 90] %}
        {{ rolling_sum('purchases', days) }} as purchases_{{ days }}d,
        {{ rolling_sum('revenue', days, 'decimal(18, 4)') }} as revenue_{{ days }}d,
        {%- endfor %}
        {%- for measure in ['searches', 'video_plays', 'video_completes', 'bounce_sessions',
                            'return_visits_without_action', 'intent_sessions', 'articles_read',
                            'page_revisits', 'partial_scroll_page_views', 'cart_abandons',
                            'sessions_with_repeated_subscribe_hovers', 'mobile_sessions',
                            'desktop_sessions', 'final_page_views'] %}
        {{ rolling_sum(measure, 28) }} as {{ measure }}_28d,
        {%- endfor %}
        {{ rolling_sum('scroll_percent_sum', 28, 'double') }} as scroll_percent_sum_28d,
        max(max_articles_within_window) over (w rows between 27 preceding and current row)
            as max_articles_within_window_28d,
        max(max_product_dwell_without_cart_s) over (w rows between 27 preceding and current row)
            as max_product_dwell_without_cart_s_28d,
        max(max_article_dwell_s) over (w rows between 27 preceding and current row)
            as max_article_dwell_s_28d,
        max(last_session_start_at) over (w rows between unbounded preceding and current row)
            as last_session_start_at,
        last_value(consents_to_personalization ignore nulls) over (
            w rows between unbounded preceding and current row) as consents_to_personalization
    from daily
    window w as (partition by person_id order by as_of_date)
),

final as (
    select
        windowed.person_id,
        windowed.as_of_date,
        date_diff('day', windowed.last_session_start_at::date, windowed.as_of_date)
            as days_since_last_session,
        windowed.sessions_1d,
        windowed.sessions_7d,
        windowed.sessions_28d,
        windowed.sessions_90d,
        windowed.page_views_7d,
        windowed.page_views_28d,
        windowed.engaged_s_7d,
        windowed.engaged_s_28d,
        windowed.articles_read_28d,
        windowed.scroll_percent_sum_28d / nullif(windowed.final_page_views_28d, 0)
            as avg_max_scroll_percent_28d,
        favorite_categories.favorite_category_28d,
        favorite_categories.favorite_category_share_28d,
        windowed.hovers_7d,
        windowed.hovers_28d,
        windowed.hover_ms_7d,
        windowed.hover_ms_28d,
        windowed.subscribe_hovers_7d,
        windowed.subscribe_hovers_28d,
        windowed.sessions_with_repeated_subscribe_hovers_28d,
        windowed.clicks_7d,
        windowed.clicks_28d,
        windowed.max_articles_within_window_28d,
        windowed.page_revisits_28d,
        windowed.partial_scroll_page_views_28d,
        windowed.max_article_dwell_s_28d,
        windowed.max_product_dwell_without_cart_s_28d,
        windowed.video_plays_28d,
        windowed.video_completes_28d::double / nullif(windowed.video_plays_28d, 0)
            as video_completion_rate_28d,
        windowed.searches_28d,
        windowed.product_views_7d,
        windowed.product_views_28d,
        windowed.cart_adds_7d,
        windowed.cart_adds_28d,
        windowed.cart_abandons_28d,
        windowed.purchases_7d,
        windowed.purchases_28d,
        windowed.purchases_90d,
        windowed.revenue_7d,
        windowed.revenue_28d,
        windowed.revenue_90d,
        windowed.mobile_sessions_28d::double / nullif(windowed.sessions_28d, 0)
            as mobile_share_28d,
        windowed.desktop_sessions_28d::double / nullif(windowed.sessions_28d, 0)
            as desktop_share_28d,
        windowed.bounce_sessions_28d,
        windowed.return_visits_without_action_28d,
        windowed.intent_sessions_28d,
        coalesce(not windowed.consents_to_personalization, false) as is_opted_out
    from windowed
    left join favorite_categories using (person_id, as_of_date)
)

select * from final

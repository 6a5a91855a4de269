{#- One row per session: when, how long, how engaged, where it started and ended, and whether
    it led to a cart, a checkout or a purchase. Incremental: replaces the sessions rewritten in
    this run; session_index continues from the person's sessions that stay. -#}
{{ config(materialized='incremental', unique_key='session_id', incremental_strategy='delete+insert',
          pre_hook="{{ delete_stale_sessions() }}") }}

-- depends_on: {{ ref('int_identities_stitched') }}
-- depends_on: {{ ref('int_events_sessionized') }}

with

events as (
    select * from {{ rewritten_events() }} as paged
),

page_views as (
    select * from {{ ref('fct_page_views') }}
    where {{ in_rewritten_sessions() }}
),

session_events as (
    select
        session_id,
        any_value(person_id) as person_id,
        min(event_at) as session_start_at,
        max(event_at) as session_end_at,
        count(*) as events,
        {{ first_value_by('anonymous_id', '(event_at, event_id)') }} as anonymous_id,
        {{ first_value_by('device_type', '(event_at, event_id)') }} as device_type,
        {{ first_value_by('country', '(event_at, event_id)') }} as country,
        {{ first_value_by('referrer', '(event_at, event_id)') }} as referrer,
        {{ first_value_by('utm_source', '(event_at, event_id)') }} as utm_source,
        {{ first_value_by('utm_medium', '(event_at, event_id)') }} as utm_medium,
        {{ first_value_by('utm_campaign', '(event_at, event_id)') }} as utm_campaign,
        count(*) filter (where event_type = 'page_ping') as page_pings,
        sum({{ engaged_s() }})::bigint as engaged_s,
        count(*) filter (where event_type = 'add_to_cart') as cart_adds,
        bool_or(event_type = 'checkout_start') as has_checkout,
        bool_or(event_type = 'purchase') as has_purchase,
        coalesce(sum(revenue) filter (where event_type = 'purchase'), 0)::decimal(18, 4)
            as revenue,
        count(*) filter (where event_type = 'search') as searches
    from events
    group by session_id
),

session_pages as (
    select
        session_id,
        count(*) as page_views,
        max(max_scroll_percent) as max_scroll_percent,
        {{ first_value_by('page_url', 'page_view_in_session') }} as landing_page_url,
        {{ first_value_by('page_type', 'page_view_in_session') }} as landing_page_type,
        {{ last_value_by('page_url', 'page_view_in_session') }} as exit_page_url,
        {{ last_value_by('page_type', 'page_view_in_session') }} as exit_page_type
    from page_views
    group by session_id
),

earlier_sessions as (
    {% if is_incremental() %}
    -- sessions kept from earlier runs (stale ones were deleted by the pre_hook)
    select person_id, count(*) as sessions
    from {{ this }}
    where person_id in (select person_id from session_events)
    group by all
    {% else %}
    select null::string as person_id, 0 as sessions where false
    {% endif %}
),

final as (
    select
        session_events.session_id,
        session_events.person_id,
        coalesce(earlier_sessions.sessions, 0)
            + cast(row_number() over (partition by session_events.person_id
                                      order by session_events.session_start_at) as bigint)
            as session_index,
        session_events.session_start_at,
        session_events.session_end_at,
        {{ seconds_between('session_events.session_start_at', 'session_events.session_end_at') }} as duration_s,
        session_events.engaged_s,
        session_events.events,
        coalesce(session_pages.page_views, 0) as page_views,
        coalesce(session_pages.max_scroll_percent, 0) as max_scroll_percent,
        session_pages.landing_page_url,
        session_pages.landing_page_type,
        session_pages.exit_page_url,
        session_pages.exit_page_type,
        session_events.anonymous_id,
        session_events.device_type,
        session_events.country,
        session_events.referrer,
        session_events.utm_source,
        session_events.utm_medium,
        session_events.utm_campaign,
        session_events.searches,
        session_events.cart_adds,
        session_events.has_checkout,
        session_events.has_purchase,
        session_events.revenue,
        coalesce(session_pages.page_views, 0) <= 1
            and session_events.session_end_at - session_events.session_start_at
                < interval '{{ var("bounce_seconds") }} seconds' as is_bounce
    from session_events
    left join session_pages using (session_id)
    left join earlier_sessions using (person_id)
)

select * from final

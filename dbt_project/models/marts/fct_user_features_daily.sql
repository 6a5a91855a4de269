{#- One row per person and as_of_date D: behavior up to (not including) D, for segments and
    models. Point in time: a row for D only uses facts that were final before D
    (int_person_days dates each fact by the day it became final), so adding events at or after
    D never changes it. Identity is the current stitching (a later login re-attributes a
    device's past), as in every identity-graph tool; the event facts are point in time.
    Windows are in the names: _7d is the 7 days before D. Sessions, purchases and revenue, and
    the activity counts take their windows from var feature_windows; the behavior measures are
    over 28 days.
    As-of dates run from the day after a person is first seen to the day after the last event,
    or to the latest night the pipeline ran if that is later (quiet days carry features over).
    Incremental: touched people from their restart day, and every person's new as-of dates. -#}
{{ config(materialized='incremental', unique_key=['person_id', 'as_of_date'],
          incremental_strategy='delete+insert',
          pre_hook="{{ delete_touched_days('as_of_date', strictly_after=true) }}") }}

-- depends_on: {{ ref('int_events_stitched') }}
-- depends_on: {{ ref('int_events_sessionized') }}
-- depends_on: {{ ref('int_identities_stitched') }}

{%- set windows = var('feature_windows') %}
{%- set behavior_days = 28 %}
{%- set lookback_days = (windows.sessions + windows.purchases + windows.activity + [behavior_days]) | max %}
{%- set activity_measures = ['page_views', 'engaged_s', 'hovers', 'hover_ms', 'subscribe_hovers',
                             'clicks', 'cart_adds', 'product_views'] %}
{%- set behavior_measures = ['searches', 'video_plays', 'video_completes', 'bounce_sessions',
                             'return_visits_without_action', 'intent_sessions', 'articles_read',
                             'page_revisits', 'partial_scroll_page_views', 'cart_abandons',
                             'sessions_with_repeated_subscribe_hovers', 'mobile_sessions',
                             'desktop_sessions', 'final_page_views'] %}
{%- set max_measures = ['max_articles_within_window', 'max_product_dwell_without_cart_s',
                        'max_article_dwell_s'] %}
{%- set day_columns = ['sessions', 'purchases', 'revenue', 'scroll_percent_sum']
                      + activity_measures + behavior_measures + max_measures %}

with

person_days as (
    select * from {{ ref('int_person_days') }}
),

category_days as (
    select * from {{ ref('int_person_category_days') }}
),

bounds as (
    -- the day after the newest event, or a later night the pipeline ran (raw.nights): on a
    -- quiet day people are still people, their features carried forward
    select greatest(
        (select max(event_at)::date + 1 from {{ ref('int_events_stitched') }}),
        (select max(as_of_date) from {{ source('raw', 'nights') }})
    ) as last_as_of
),

people as (
    select person_id, min(activity_date) + 1 as first_as_of
    from person_days
    group by all
),

{% if is_incremental() %}

starts as (
    -- touched people from the day after their restart day
    select people.person_id, greatest(people.first_as_of, touched.restart_date + 1) as from_as_of
    from people
    join ({{ touched_people() }}) as touched using (person_id)
    union all
    -- everybody's as-of dates that did not exist yet
    select person_id,
           greatest(first_as_of, (select max(as_of_date) from {{ this }}) + 1) as from_as_of
    from people
),

{% else %}

starts as (
    select person_id, first_as_of as from_as_of from people
),

{% endif %}

targets as (
    select starts.person_id, day::date as as_of_date
    from (select person_id, min(from_as_of) as from_as_of from starts group by all) as starts
    cross join bounds
    {{ each_day('starts.from_as_of', 'bounds.last_as_of', 'day') }}
),

-- each as-of date with the facts of the day before it (none on a quiet day) and, before a
-- person's first one, the active days its windows reach back to (as the as-of dates after
-- them): in a full build every window is a frame of the person's rows, where joining each
-- as-of date to the days before it grouped 90 times the rows (6.5 s of a 10M-event build)
calendar as (
    select targets.person_id, targets.as_of_date, true as is_target
           {%- for column in day_columns %}, days.{{ column }}{% endfor %}
    from targets
    left join person_days as days
        on days.person_id = targets.person_id and days.activity_date = targets.as_of_date - 1
    union all
    select days.person_id, days.activity_date + 1, false
           {%- for column in day_columns %}, days.{{ column }}{% endfor %}
    from person_days as days
    join (select person_id, min(as_of_date) as first_target from targets group by all) as firsts
        on firsts.person_id = days.person_id
       and days.activity_date + 1 < firsts.first_target
       and days.activity_date + 1 >= firsts.first_target - {{ lookback_days }}
),

numbered as (
    select *, {{ dbt.datediff("cast('1970-01-01' as date)", 'as_of_date', 'day') }} as day_number
    from calendar
),

-- each as-of date's windows (macros/windows.sql): in a full build, about 30 a person, frames of
-- the person's rows; in a night, one or two a person, each joined to the rows of its lookback
-- (frames cost as much per person as in a full build: 0.74 s of a 10M-event night, the join
-- 0.09 s)
windowed as (
    select * from (
        select
            person_id,
            as_of_date,
            is_target,
            {%- for days in windows.sessions %}
            {{ days_sum('sessions', days) }} as sessions_{{ days }}d,
            {%- endfor %}
            {%- for measure in activity_measures %}
            {%- for days in windows.activity %}
            {{ days_sum(measure, days) }} as {{ measure }}_{{ days }}d,
            {%- endfor %}
            {%- endfor %}
            {%- for days in windows.purchases %}
            {{ days_sum('purchases', days) }} as purchases_{{ days }}d,
            {{ days_sum('revenue', days, 'decimal(18, 4)') }} as revenue_{{ days }}d,
            {%- endfor %}
            {%- for measure in behavior_measures %}
            {{ days_sum(measure, behavior_days) }} as {{ measure }}_28d,
            {%- endfor %}
            {{ days_sum('scroll_percent_sum', behavior_days, 'double') }} as scroll_percent_sum_28d,
            {%- for measure in max_measures %}
            {{ days_max(measure, behavior_days) }} as {{ measure }}_28d{{ ',' if not loop.last }}
            {%- endfor %}
        {%- if is_incremental() %}
        from (
            select targets.person_id, targets.as_of_date, targets.is_target,
                   targets.day_number as target_day_number, days.day_number
                   {%- for column in day_columns %}, days.{{ column }}{% endfor %}
            from numbered as targets
            join numbered as days
                on days.person_id = targets.person_id
               and days.day_number > targets.day_number - {{ lookback_days }}
               and days.day_number <= targets.day_number
            where targets.is_target
        ) as lookbacks
        group by person_id, as_of_date, is_target
        {%- else %}
        from numbered
        {%- endif %}
    ) as framed
    where is_target
),

last_sessions as (
    -- the device and country a person was last seen with before D: what the fairness audit
    -- groups by on that date (dim_persons holds only the latest)
    {{ latest_day_before('targets', '(select * from person_days where sessions > 0)',
                         ['last_session_start_at', 'last_device_type', 'last_country']) }}
),

consents as (
    {{ latest_day_before(
        'targets', '(select * from person_days where consents_to_personalization is not null)',
        ['consents_to_personalization']) }}
),

category_totals as (
    select t.person_id, t.as_of_date, c.content_category, sum(c.engaged_s) as engaged_s
    from targets as t
    join category_days as c
        on c.person_id = t.person_id
       and c.activity_date >= t.as_of_date - {{ behavior_days }}
       and c.activity_date < t.as_of_date
    group by all
),

favorite_categories as (
    select
        person_id,
        as_of_date,
        {{ last_value_by('content_category', '(engaged_s, content_category)') }} as favorite_category_28d,
        max(engaged_s) / sum(engaged_s) as favorite_category_share_28d
    from category_totals
    group by all
),

final as (
    select
        windowed.person_id,
        windowed.as_of_date,
        cast({{ dbt.datediff('last_sessions.last_session_start_at::date', 'windowed.as_of_date', 'day') }}
             as bigint) as days_since_last_session,
        case when {{ dbt.datediff('people.first_as_of', 'windowed.as_of_date', 'day') }}
                  < {{ var('new_visitor_days') }}
             then 'new' else 'returning' end as visitor_type,
        coalesce(last_sessions.last_device_type, 'unknown') as device_type,
        coalesce(last_sessions.last_country, 'unknown') as country,
        {{ window_columns('windowed', 'sessions', windows.sessions) }}
        {{ window_columns('windowed', 'page_views', windows.activity) }}
        {{ window_columns('windowed', 'engaged_s', windows.activity) }}
        windowed.articles_read_28d,
        windowed.scroll_percent_sum_28d / nullif(windowed.final_page_views_28d, 0)
            as avg_max_scroll_percent_28d,
        favorite_categories.favorite_category_28d,
        favorite_categories.favorite_category_share_28d,
        {{ window_columns('windowed', 'hovers', windows.activity) }}
        {{ window_columns('windowed', 'hover_ms', windows.activity) }}
        {{ window_columns('windowed', 'subscribe_hovers', windows.activity) }}
        windowed.sessions_with_repeated_subscribe_hovers_28d,
        {{ window_columns('windowed', 'clicks', windows.activity) }}
        windowed.max_articles_within_window_28d,
        windowed.page_revisits_28d,
        windowed.partial_scroll_page_views_28d,
        windowed.max_article_dwell_s_28d,
        windowed.max_product_dwell_without_cart_s_28d,
        windowed.video_plays_28d,
        windowed.video_completes_28d::double / nullif(windowed.video_plays_28d, 0)
            as video_completion_rate_28d,
        windowed.searches_28d,
        {{ window_columns('windowed', 'product_views', windows.activity) }}
        {{ window_columns('windowed', 'cart_adds', windows.activity) }}
        windowed.cart_abandons_28d,
        {{ window_columns('windowed', 'purchases', windows.purchases) }}
        {{ window_columns('windowed', 'revenue', windows.purchases) }}
        windowed.mobile_sessions_28d::double / nullif(windowed.sessions_28d, 0)
            as mobile_share_28d,
        windowed.desktop_sessions_28d::double / nullif(windowed.sessions_28d, 0)
            as desktop_share_28d,
        windowed.bounce_sessions_28d,
        windowed.return_visits_without_action_28d,
        windowed.intent_sessions_28d,
        coalesce(not consents.consents_to_personalization, false) as is_opted_out
    from windowed
    join people using (person_id)
    left join last_sessions using (person_id, as_of_date)
    left join consents using (person_id, as_of_date)
    left join favorite_categories using (person_id, as_of_date)
)

select * from final

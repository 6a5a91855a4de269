{#- Engaged time is the sum of what each event stands for. Canonical input: only page pings
    count, each ping is var heartbeat_seconds (trackers ping that often while the reader is
    active). Snowplow input counts the way Snowplow's dbt packages do, per page view:
    snowplow_heartbeat_seconds x (its distinct ping periods - 1) +
    snowplow_min_visit_length_seconds. This macro gives that share to each of a page view's
    pings (`pings`: a relation of Snowplow page pings with page_view_id, event_at, event_id):
    the first ping of its first period the minimum visit, the first of each later period a
    heartbeat, repeats within a period and pings before any page view nothing. -#}
{% macro snowplow_engaged_seconds(pings) -%}
    {%- set period = "floor(" ~ epoch_seconds(pings ~ ".event_at") ~ " / " ~ var('snowplow_heartbeat_seconds') ~ ")" -%}
    case
        when {{ pings }}.page_view_id is null then 0
        when row_number() over (
            partition by {{ pings }}.page_view_id, {{ period }}
            order by {{ pings }}.event_at, {{ pings }}.event_id
        ) > 1 then 0
        when {{ period }} = min({{ period }}) over (partition by {{ pings }}.page_view_id)
            then {{ var('snowplow_min_visit_length_seconds') }}
        else {{ var('snowplow_heartbeat_seconds') }}
    end
{%- endmacro %}

{#- GA4 counts engaged time on most events, each carrying the milliseconds since the last one
    that did (`engagement_time_msec`): an event's share is its own, in seconds (none, or a
    negative value: 0). -#}
{% macro ga4_engaged_seconds(properties) -%}
    greatest(coalesce(try_cast({{ json_text(properties, '$.engagement_time_msec') }} as double), 0), 0) / 1000
{%- endmacro %}

{#- An event's engaged seconds: `weighed` (int_events_paged.engaged_s; a Snowplow ping's share)
    when known, else the canonical rule - heartbeat_seconds a page ping, nothing otherwise
    (also for int_events_paged rows from before that column: canonical input only). -#}
{% macro engaged_s(weighed='engaged_s', event_type='event_type') -%}
    coalesce({{ weighed }}, ({{ event_type }} = 'page_ping')::integer * {{ var('heartbeat_seconds') }})
{%- endmacro %}

{#- The events of `keys` (a relation with session_id, event_id, event_at, event_type) with the
    page view each happened on, from one sort of each session: the page views counted so far
    (page_view_in_session) and the latest of them (page_view_id; a page_view sorts first among
    equal timestamps, and events before a session's first page view have none). -#}
{% macro with_page_views(keys) -%}
    select
        *,
        count(*) filter (where event_type = 'page_view') over session_order
            as page_view_in_session,
        {{ ignoring_nulls('last_value', "case when event_type = 'page_view' then event_id end") }}
            over session_order as page_view_id
    from {{ keys }}
    window session_order as (
        partition by session_id
        order by event_at, event_type <> 'page_view', event_id
        rows between unbounded preceding and current row
    )
{%- endmacro %}

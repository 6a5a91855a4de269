{#- Where pointers rest and click, per day, page type and element, counted over everyone: the
    picture a site would otherwise get from session recordings (notebooks/micro_behaviors).
    Holds no person; a view, so it costs the nightly build nothing and always reads the events
    the warehouse still has (after expiry and erasure). -#}
{{ config(materialized='view') }}

select
    cast(event_at as date) as activity_date,
    page_type,
    element_id,
    count(distinct session_id) as sessions,
    count(*) filter (where event_type = 'hover') as hovers,
    coalesce(sum(hover_ms) filter (where event_type = 'hover'), 0)::bigint as hover_ms,
    count(*) filter (where event_type = 'click') as clicks
from {{ ref('int_events_paged') }}
where event_type in ('hover', 'click') and element_id is not null
group by all

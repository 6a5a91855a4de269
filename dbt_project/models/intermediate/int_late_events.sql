{#- Events staged but not stitched: they arrived with an event time further back than
    var late_arrival_hours behind what incremental runs had already processed. The next
    `microseg transform --full-refresh` takes them in; after raw retention a full refresh is
    refused, and they expire once older than its horizon (macros/retention.sql).
    Rebuilt whole each run, from every staged event: a night that failed after staging would
    otherwise leave its arrivals out of the list. -#}
{{ config(materialized='table') }}

-- narrow keys first, the event's columns joined back for the few late ones: an anti join
-- carrying every column of staging held them all in its hash table (28.9 s of a 10M full
-- build at a 3GB limit; 4.1 s narrow)
with

staged as (
    select event_id, event_at, user_id, anonymous_id from {{ ref('stg_events') }}
),

stitched as (
    select event_id from {{ ref('int_events_stitched') }}
),

late as (
    select staged.event_id
    from staged
    {{ anti_join() }} stitched using (event_id)
    -- before the retention horizon nothing is built any more (kept consent records)
    where staged.event_at >= {{ retention_horizon() }}
      -- placeholder-only events are left out on purpose, not late
      and ({{ usable_id('staged.user_id') }} is not null
           or {{ usable_id('staged.anonymous_id') }} is not null)
),

final as (
    select * from {{ ref('stg_events') }}
    where event_id in (select event_id from late)
)

select * from final

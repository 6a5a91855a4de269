{#- Events staged but not stitched: they arrived with an event time further back than
    var late_arrival_hours behind what incremental runs had already processed. The next
    `microseg transform --full-refresh` takes them in; after raw retention a full refresh is
    refused, and they expire once older than its horizon (macros/retention.sql). -#}
{{ config(materialized='table') }}

with

staged as (
    select * from {{ ref('stg_events') }}
),

stitched as (
    select event_id from {{ ref('int_events_stitched') }}
),

final as (
    select staged.*
    from staged
    where staged.event_id not in (select event_id from stitched)
      -- before the retention horizon nothing is built any more (kept consent records)
      and staged.event_at >= {{ retention_horizon() }}
      -- placeholder-only events are left out on purpose, not late
      and ({{ usable_id('staged.user_id') }} is not null
           or {{ usable_id('staged.anonymous_id') }} is not null)
)

select * from final

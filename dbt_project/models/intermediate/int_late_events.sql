{#- Events staged but not stitched: they arrived with an event time further back than
    var late_arrival_hours behind what incremental runs had already processed. The next
    `microseg transform --full-refresh` takes them in; after raw retention a full refresh is
    refused, and they expire once older than its horizon (macros/retention.sql).

    Incremental: only the events staged in this run (stg_events' latest arrival_batch) can be
    newly late, so a night looks those up instead of every staged event of the history; the
    pre_hook drops the rows now before the horizon or stitched after all (an incremental run
    stitches no event older than its cutoff, but erasure can move the cutoff back). -#}
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns', pre_hook="{{ delete_no_longer_late() }}") }}

with

staged as (
    select * from {{ ref('stg_events') }}
    {% if is_incremental() %}
    where arrival_batch = (select max(arrival_batch) from {{ ref('stg_events') }})
    {% endif %}
),

stitched as (
    select event_id from {{ ref('int_events_stitched') }}
),

final as (
    select staged.*
    from staged
    {{ anti_join() }} stitched using (event_id)
    -- before the retention horizon nothing is built any more (kept consent records)
    where staged.event_at >= {{ retention_horizon() }}
      -- placeholder-only events are left out on purpose, not late
      and ({{ usable_id('staged.user_id') }} is not null
           or {{ usable_id('staged.anonymous_id') }} is not null)
)

select * from final

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

{%- set arrived_in_this_run -%}
    {%- if is_incremental() -%}
    arrival_batch = (select max(arrival_batch) from {{ ref('stg_events') }})
    {%- else -%}
    true
    {%- endif -%}
{%- endset %}

-- narrow keys first, the event's columns joined back for the few late ones: an anti join
-- carrying every column of staging held them all in its hash table (28.9 s of a 10M full
-- build at a 3GB limit; 2.8 s narrow)
with

staged as (
    select event_id, event_at, user_id, anonymous_id from {{ ref('stg_events') }}
    where {{ arrived_in_this_run }}
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
    where {{ arrived_in_this_run }}
      and event_id in (select event_id from late)
)

select * from final

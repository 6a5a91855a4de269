{#- Every event with its own columns (stg_events), its person and session (the narrow
    int_events_sessionized) and the page view it happened on: the latest page_view of the same
    session at or before it (a page_view sorts first among equal timestamps). Events before a
    session's first page view have no page_view_id. engaged_s: the engaged seconds the event
    stands for (macros/engaged.sql): var heartbeat_seconds a page ping, Snowplow's pings
    Snowplow's way, GA4's events the engagement_time_msec they carry; null on rows built
    before it existed (all canonical: macros/engaged.sql reads them as pings of
    heartbeat_seconds). The one event-grain table that carries the
    event's columns past staging: the windows before it sort narrow keys only.
    Incremental: the sessions rewritten in the last int_events_sessionized batch (always whole
    sessions). -#}
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

{#- The run's sessions, written out where they are read: DuckDB materializes a CTE that is
    read twice, which in a full build copied the keys of every event -#}
{%- set sessions -%}
    (select * from {{ ref('int_events_sessionized') }}
     {%- if is_incremental() %}
     where batch = {{ current_batch(ref('int_events_sessionized')) }}
     {%- endif %})
{%- endset %}

with

-- the event's own columns joined once, before the page-view window (it carries them): joined
-- back after it, staging was read twice (4 s of a 10M-event build at a 3GB limit)
keys as (
    select
        staged.*,
        sessions.person_id,
        sessions.activity_run_start_at,
        sessions.session_start_at,
        sessions.session_id,
        sessions.previous_session_id,
        sessions.batch
    from {{ sessions }} as sessions
    join {{ ref('stg_events') }} as staged using (event_id)
),

page_views as (
    {{ with_page_views('keys') }}
),

-- Snowplow's pings and GA4's events weigh their own engaged time: the sessions holding events
-- of those files are paged again on their own, so that page_views is read once
sourced_files as (
    select file_name, file_format
    from {{ source('raw', 'load_manifest') }}
    where file_format in ('snowplow', 'ga4')
),

sourced_keys as (
    select sessions.*, staged.event_type, staged.properties, sourced_files.file_format
    from {{ sessions }} as sessions
    join {{ ref('stg_events') }} as staged using (event_id)
    left join sourced_files on sourced_files.file_name = staged.source_file
    where sessions.session_id in (
        select sourced_sessions.session_id
        from {{ sessions }} as sourced_sessions
        join {{ ref('stg_events') }} as staged using (event_id)
        join sourced_files on sourced_files.file_name = staged.source_file
    )
),

sourced as (
    {{ with_page_views('sourced_keys') }}
),

weighed_by_source as (
    select event_id, {{ snowplow_engaged_seconds('sourced') }} as engaged_s
    from sourced
    where file_format = 'snowplow' and event_type = 'page_ping'
    union all
    select event_id, {{ ga4_engaged_seconds('sourced.properties') }}
    from sourced
    where file_format = 'ga4'
),

final as (
    select
        page_views.*,
        {{ engaged_s('weighed_by_source.engaged_s', 'page_views.event_type') }} as engaged_s
    from page_views
    left join weighed_by_source using (event_id)
)

select * from final

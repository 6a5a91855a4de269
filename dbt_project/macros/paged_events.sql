{#- The query of int_events_paged (its description is there) for slice `slice_index` of the
    run's sessions (`spans`: macros/slices.sql; none for one slice). -#}
{% macro paged_events(slice_index, spans) %}
{#- The run's sessions, written out where they are read: DuckDB materializes a CTE that is
    read twice, which in a full build copied the keys of every event -#}
{%- set sessions -%}
    (select * from {{ ref('int_events_sessionized') }}
     {%- if spans | length > 1 %}
     where {{ in_slice(spans, slice_index) }}
     {%- elif is_incremental() %}
     where batch = {{ current_batch(ref('int_events_sessionized')) }}
     {%- endif %})
{%- endset %}
{%- set recent_from = recent_events_from(sessions) if is_incremental() else none %}

with

-- the page-view window sorts the run's narrow session keys with each event's type; the event's
-- own columns are joined once after it (the window sorted them when joined before it: 8.5 ->
-- 6.5 s a slice of a 10M-event build at a 3GB limit)
keys as (
    select sessions.*, staged.event_type
    from {{ sessions }} as sessions
    join ({{ staged_events('event_id, event_type', spans, slice_index, sessions, recent_from) }})
        as staged using (event_id)
),

paged_keys as (
    {{ with_page_views('keys') }}
),

page_views as (
    select
        staged.*,
        paged_keys.person_id,
        paged_keys.activity_run_start_at,
        paged_keys.session_start_at,
        paged_keys.session_id,
        paged_keys.previous_session_id,
        paged_keys.batch,
        paged_keys.page_view_in_session,
        paged_keys.page_view_id
    from paged_keys
    join ({{ staged_events('*', spans, slice_index, sessions, recent_from) }}) as staged
        using (event_id)
),

-- Snowplow's pings and GA4's events weigh their own engaged time: the sessions holding events
-- of those files are paged again on their own, so that page_views is read once
sourced_files as (
    select file_name, file_format
    from {{ source('raw', 'load_manifest') }}
    where file_format in ('snowplow', 'ga4')
),

-- the sessions holding such events found before staging is joined to them: joined first, it
-- was joined to every event (5 s of a 10M-event build holding no such file)
sourced_keys as (
    select sessions.*, staged.event_type, staged.properties, sourced_files.file_format
    from (
        select * from {{ sessions }}
        where session_id in (
            select session_id from {{ sessions }}
            where event_id in (
                select event_id from {{ ref('stg_events') }}
                where source_file in (select file_name from sourced_files)))
    ) as sessions
    join {{ ref('stg_events') }} as staged using (event_id)
    left join sourced_files on sourced_files.file_name = staged.source_file
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
{% endmacro %}

{#- `columns` of the staged events a run of int_events_paged can hold: a slice's span of event
    time in a full build; in a night, the events from `recent_from` on and the older ones of
    `sessions` by id (macros/slices.sql). -#}
{% macro staged_events(columns, spans, slice_index, sessions, recent_from) %}
    {%- if recent_from is none %}
    select {{ columns }} from {{ ref('stg_events') }} where {{ in_slice_span(spans, slice_index) }}
    {%- else %}
    select {{ columns }} from {{ ref('stg_events') }}
    where event_at >= {{ timestamp_literal(recent_from) }}
    union all
    select {{ columns }} from {{ ref('stg_events') }}
    where event_at < {{ timestamp_literal(recent_from) }}
      and event_id in (select event_id from {{ sessions }} as sessions
                       where event_at < {{ timestamp_literal(recent_from) }})
    {%- endif %}
{% endmacro %}

{#- Every event with its own columns (stg_events), its person and session (the narrow
    int_events_sessionized) and the page view it happened on: the latest page_view of the same
    session at or before it (a page_view sorts first among equal timestamps). Events before a
    session's first page view have no page_view_id. engaged_s: the engaged seconds the event
    stands for (macros/engaged.sql): var heartbeat_seconds a page ping, Snowplow's pings
    Snowplow's way, GA4's events the engagement_time_msec they carry; null on rows built
    before it existed (all canonical: macros/engaged.sql reads them as pings of
    heartbeat_seconds). The one event-grain table that carries the
    event's columns past staging: its window and those before it sort narrow keys only.
    Incremental: the sessions rewritten in the last int_events_sessionized batch (always whole
    sessions). A full build runs in slices of sessions by start time, each reading only the
    span of staging its events are in (macros/slices.sql); the query is
    paged_events (macros/paged_events.sql), which the post_hook renders for each other slice. -#}
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns',
          post_hook="{% set spans = slice_spans(ref('int_events_sessionized'), slices_of(model.compiled_code)) %}
                     {% for index in range(1, spans | length) %}
                     insert into {{ this }} by name {{ paged_events(index, spans) }};
                     {% endfor %}") }}

{{ paged_events(0, slice_spans(ref('int_events_sessionized'),
                               event_slices(ref('int_events_sessionized')))) }}

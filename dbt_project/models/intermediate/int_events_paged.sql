{#- Each event attached to the page view it happened on: the latest page_view of the same
    session at or before it (a page_view sorts first among equal timestamps). Events before
    a session's first page view have no page_view_id. Incremental: the sessions rewritten in
    the last int_events_sessionized batch (always whole sessions). -#}
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert') }}

with

events as (
    select * from {{ ref('int_events_sessionized') }}
    {% if is_incremental() %}
    where batch = {{ current_batch(ref('int_events_sessionized')) }}
    {% endif %}
),

-- the windows sort narrow keys only; the wide event columns are joined back once
numbered as (
    select
        event_id,
        session_id,
        event_at,
        event_type,
        count(*) filter (where event_type = 'page_view') over (
            partition by session_id
            order by event_at, event_type <> 'page_view', event_id
            rows between unbounded preceding and current row
        ) as page_view_in_session
    from events
),

page_views as (
    select
        event_id,
        page_view_in_session,
        case when page_view_in_session > 0 then
            first_value(case when event_type = 'page_view' then event_id end) over (
                partition by session_id, page_view_in_session
                order by event_type <> 'page_view', event_at, event_id
            )
        end as page_view_id
    from numbered
),

final as (
    select events.*, page_views.page_view_in_session, page_views.page_view_id
    from events
    join page_views using (event_id)
)

select * from final

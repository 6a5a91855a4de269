{#- Each event attached to the page view it happened on: the latest page_view of the same
    session at or before it (a page_view sorts first among equal timestamps). Events before
    a session's first page view have no page_view_id. -#}
with

events as (
    select * from {{ ref('int_events_sessionized') }}
),

numbered as (
    select
        *,
        count(*) filter (where event_type = 'page_view') over (
            partition by session_id
            order by event_at, event_type <> 'page_view', event_id
            rows between unbounded preceding and current row
        ) as page_view_in_session
    from events
),

final as (
    select
        *,
        first_value(case when event_type = 'page_view' then event_id end) over (
            partition by session_id, page_view_in_session
            order by event_type <> 'page_view', event_at, event_id
        ) as page_view_id
    from numbered
)

select
    * exclude (page_view_id),
    case when page_view_in_session > 0 then page_view_id end as page_view_id
from final

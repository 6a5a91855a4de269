{#- Sessions per person: a gap strictly greater than var session_timeout_minutes starts a new
    session (a gap of exactly the timeout stays in it); a session longer than
    var session_max_minutes is cut into pieces of that length. Ties on event_at are ordered by
    event_id so that reprocessing always gives the same answer. session_id is a hash of the
    person and the session's first event time, never a row number. -#}
with

events as (
    select * from {{ ref('int_events_stitched') }}
),

gaps as (
    select
        *,
        coalesce(
            event_at - lag(event_at) over by_person
                > interval '{{ var("session_timeout_minutes") }} minutes',
            true
        ) as is_after_gap
    from events
    window by_person as (partition by person_id order by event_at, event_id)
),

activity_runs as (
    select
        *,
        count(*) filter (where is_after_gap) over (
            partition by person_id order by event_at, event_id
            rows between unbounded preceding and current row
        ) as activity_run
    from gaps
),

capped as (
    select
        *,
        floor(
            epoch(event_at - min(event_at) over (partition by person_id, activity_run))
            / ({{ var("session_max_minutes") }} * 60)
        )::int as piece
    from activity_runs
),

sessions as (
    select
        *,
        min(event_at) over (partition by person_id, activity_run, piece) as session_start_at
    from capped
),

final as (
    select
        * exclude (is_after_gap, activity_run, piece),
        'ses_' || left(md5(person_id || '|' || strftime(session_start_at, '%Y-%m-%dT%H:%M:%S.%f')), 24)
            as session_id
    from sessions
)

select * from final

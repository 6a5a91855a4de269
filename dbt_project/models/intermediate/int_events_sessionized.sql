{#- Sessions per person (narrow: the session keys of each event; int_events_paged joins the
    event's own columns back once): a gap strictly greater than var session_timeout_minutes starts a new
    session (a gap of exactly the timeout stays in it); a session longer than
    var session_max_minutes is cut into pieces of that length, counted from the start of the
    uninterrupted activity run. With var session_source 'client', a change of a device's own
    session id (properties.client_session_id: Snowplow's domain_sessionid) also starts one, so
    sessions match the source's reports. Ties on event_at are ordered by
    event_id so reprocessing gives the same answer. session_id hashes the person and the session's first event time.

    Incremental: for each person touched by the last int_events_stitched batch, events are
    re-sessionized from a restart point that is the start of an activity run in the new data —
    the earlier of their first new event and the run start of any session that could absorb it
    (ending within the timeout before it); from the beginning for people who gained or lost
    re-attributed events. So the result equals a full rebuild. Rewritten rows carry the batch
    and their previous_session_id, for the session marts to replace; a full build's rows carry
    their int_events_stitched rows' batch (numbered by day). -#}
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert') }}
{#- the table's columns in order; `batch` is the stitched batch read, carried by the windows -#}
{%- set sessionized_columns -%}
    sessionized.event_id, sessionized.event_at, sessionized.person_id,
    sessionized.activity_run_start_at, sessionized.session_start_at, sessionized.session_id
{%- endset %}

-- int_events_stitched is read where it is needed, not through one CTE: DuckDB materializes a
-- CTE read twice, which at 10M events copied the whole table on every night
with

{% if is_incremental() %}

touched as (
    select * from {{ ref('int_events_stitched') }}
    where batch = {{ current_batch(ref('int_events_stitched')) }}
),

moved_people as (
    select previous_person_id as person_id from touched where previous_person_id is not null
    union
    select person_id from touched where previous_person_id is not null
),

first_new as (
    select person_id, min(event_at) as first_new_at
    from touched
    where previous_person_id is null
    group by all
),

-- the sessions that could absorb a person's first new event: those with an event within the
-- timeout before it (only those events are grouped, not each person's whole history)
absorbing_sessions as (
    select
        previous.person_id,
        any_value(previous.activity_run_start_at) as activity_run_start_at
    from {{ this }} as previous
    join first_new using (person_id)
    where previous.event_at >= first_new.first_new_at
                               - interval '{{ var("session_timeout_minutes") }} minutes'
      -- the same bound as one value, which zone maps read
      and previous.event_at >= (select min(first_new_at) from first_new)
                               - interval '{{ var("session_timeout_minutes") }} minutes'
    group by previous.person_id, previous.session_id
),

restart as (
    select
        first_new.person_id,
        least(first_new.first_new_at, min(absorbing_sessions.activity_run_start_at)) as restart_at
    from first_new
    left join absorbing_sessions using (person_id)
    where first_new.person_id not in (select person_id from moved_people)
    group by first_new.person_id, first_new.first_new_at
),

-- `events` to sessionize again, and the `previous` rows they replace (their session ids): each
-- person's from their restart, read through zone maps from the earliest restart on (a join on
-- person_id alone read all of history: 2.8 -> 1.9 s of this query in a 10M night), and every
-- row of a moved person (re-attributed events restart them from the beginning)
{%- set rewritten = [
        ('events', ref('int_events_stitched'),
         'event_id, event_at, person_id, ' ~ current_batch(ref('int_events_stitched')) ~ ' as batch'),
        ('previous', this, 'event_id, session_id')] %}
{%- for cte, relation, columns in rewritten %}
{{ cte }} as (
    select {{ columns }}
    from {{ relation }} as history
    join restart using (person_id)
    where history.event_at >= restart.restart_at
      and history.event_at >= (select min(restart_at) from restart)
    union all
    select {{ columns }}
    from {{ relation }} as history
    join moved_people using (person_id)
),
{% endfor %}

{% else %}

events as (
    select event_id, event_at, person_id, batch from {{ ref('int_events_stitched') }}
),

{% endif %}

{% if var("session_source") == "client" %}
with_client as (
    select events.*, staged.anonymous_id,
           nullif({{ json_text('staged.properties', '$.client_session_id') }}, '') as client_session_id
    from events
    join {{ ref('stg_events') }} as staged using (event_id)
),
{% endif %}

gaps as (
    select
        event_id,
        person_id,
        event_at,
        batch,
        coalesce(
            event_at - lag(event_at) over (partition by person_id order by event_at, event_id)
                > interval '{{ var("session_timeout_minutes") }} minutes',
            true
        )
        {%- if var("session_source") == "client" %}
        -- the device's client session id changed since its last known one: the source's
        -- session boundary (devices used in turn do not split each other's sessions)
        or coalesce(
            client_session_id <> {{ ignoring_nulls('lag', 'client_session_id') }} over (
                partition by person_id, anonymous_id order by event_at, event_id),
            false
        )
        {%- endif %} as is_after_gap
    from {{ "with_client" if var("session_source") == "client" else "events" }}
),

activity_runs as (
    -- the latest gap at or before each event opens its uninterrupted activity run
    select
        event_id,
        person_id,
        event_at,
        batch,
        max(case when is_after_gap then event_at end) over (
            partition by person_id order by event_at, event_id
            rows between unbounded preceding and current row
        ) as activity_run_start_at
    from gaps
),

session_starts as (
    select
        event_id,
        event_at,
        person_id,
        activity_run_start_at,
        batch,
        min(event_at) over (
            partition by person_id, activity_run_start_at,
                floor({{ seconds_between('activity_run_start_at', 'event_at') }}
                      / ({{ var("session_max_minutes") }} * 60))
        ) as session_start_at
    from activity_runs
),

sessionized as (
    select
        *,
        'ses_' || left(md5(person_id || '|'
                           || {{ timestamp_text('session_start_at') }}), 24)
            as session_id
    from session_starts
),

{% if is_incremental() %}

final as (
    select {{ sessionized_columns }}, previous.session_id as previous_session_id, batch
    from sessionized
    left join previous using (event_id)
)

{% else %}

final as (
    select {{ sessionized_columns }}, null::string as previous_session_id, batch
    from sessionized
)

{% endif %}

select * from final

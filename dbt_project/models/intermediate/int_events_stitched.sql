{#- Every event's person (narrow: event_id, event_at, person_id; the event's own columns are
    joined back once, in int_events_paged): by its own user id when it has a usable one, else
    by its device's stitched identity. Events before a login are therefore attributed to the person
    retroactively, on every run. Events whose only id is a placeholder (user_id 'null' and no
    device id) cannot be attributed and are left out of everything person-level.

    Incremental: a run writes (batch = previous + 1)
      - events not stitched yet whose event_at is within var late_arrival_hours of the latest
        event already stitched; older ones wait for the next full refresh (int_late_events);
      - events already stitched whose person changed (a new login re-attributes a device's
        past), with the person they had in previous_person_id. -#}
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert') }}

with

events as (
    select event_id, event_at, user_id, anonymous_id from {{ ref('stg_events') }}
),

identities as (
    select * from {{ ref('int_identities_stitched') }}
),

attributed as (
    select event_id, event_at, person_id
    from ({{ attributed_to_persons('events', 'identities') }})
),

{% if is_incremental() %}

previous as (
    select event_id, person_id from {{ this }}
),

run as (
    select
        max(event_at) - interval '{{ var("late_arrival_hours") }} hours' as cutoff_at,
        max(batch) + 1 as batch
    from {{ this }}
),

changed as (
    select attributed.*, previous.person_id as previous_person_id
    from attributed
    left join previous using (event_id)
    where (previous.event_id is null and attributed.event_at >= (select cutoff_at from run))
       or previous.person_id <> attributed.person_id
),

final as (
    select changed.*, run.batch from changed cross join run
)

{% else %}

final as (
    select attributed.*, null::string as previous_person_id, 1 as batch
    from attributed
)

{% endif %}

select * from final

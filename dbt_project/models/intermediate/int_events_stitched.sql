{#- Every event's person (narrow: event_id, event_at, person_id; the event's own columns are
    joined back once, in int_events_paged): by its own user id when it has a usable one, else
    by its device's stitched identity. Events before a login are therefore attributed to the person
    retroactively, on every run. Events whose only id is a placeholder (user_id 'null' and no
    device id) cannot be attributed and are left out of everything person-level. Each row
    keeps the ids its person was decided by (user_id, anonymous_id) and its staging
    arrival_batch, so that a night looks at the identity map and the new arrivals only.

    A full build numbers each row by its day (0 for the latest, less before it). Incremental:
    a run writes (batch = previous + 1, and 1 after a full build)
      - events staged in arrival batches after the latest one stitched (a night that failed
        after staging is caught up) whose event_at is within var late_arrival_hours of the
        latest event already stitched; older ones wait for the next full refresh
        (int_late_events);
      - events already stitched whose person changed (a new login re-attributes a device's
        past), with the person they had in previous_person_id: their stored ids looked up in
        the identity map, not every staged event attributed again and joined with the table
        (5.1 s of a 10M-event night).
    A table stitched before the ids were kept gets them on its next night, which rewrites
    every row (the models after it then rebuild everyone once).
    The identity map each run applied is kept beside the table (int_events_stitched__identities,
    its post-hook): a night looks up only the events of identities whose person it changed,
    not every stitched event (1.6 s of a 10M-event night); until that copy exists, all. -#}
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns',
          post_hook="{{ replace_table(applied_identities(),
                                      'select id_type, identifier, person_id from '
                                      ~ ref('int_identities_stitched')) }}") }}
{#- in a unit test `this` is the name of its given rows, which have them -#}
{%- set keeps_ids = is_incremental() and execute and (this is string or 'arrival_batch' in (
      adapter.get_columns_in_relation(this) | map(attribute='name') | list)) %}
{%- set applied = none if (not keeps_ids or this is string)
                  else load_relation(applied_identities()) %}

with

identities as (
    select * from {{ ref('int_identities_stitched') }}
),

{% if is_incremental() %}

run as (
    select
        max(event_at) - interval '{{ var("late_arrival_hours") }} hours' as cutoff_at,
        greatest(max(batch), 0) + 1 as batch
        {%- if keeps_ids %},
        coalesce(max(arrival_batch), 0) as stitched_through
        {%- endif %}
    from {{ this }}
),

{% endif %}

{% if keeps_ids %}

-- staging never gives a number twice, a rebuild of it included (its events then all come
-- again here: the key replaces the ones stitched already)
arrived as (
    select event_id, event_at, user_id, anonymous_id, arrival_batch
    from {{ ref('stg_events') }}
    where arrival_batch > (select stitched_through from run)
),

{% if applied is not none %}

-- identities whose person is not the one the last run applied (new and gone ones included)
changed_identities as (
    select id_type, identifier from (
        select id_type, identifier, person_id from identities
        except
        select id_type, identifier, person_id from {{ applied }}
    ) as gained
    union
    select id_type, identifier from (
        select id_type, identifier, person_id from {{ applied }}
        except
        select id_type, identifier, person_id from identities
    ) as lost
),

{% endif %}

-- an event keeps its person unless the person of its user id or of its device changed
stitched as (
    select event_id, event_at, user_id, anonymous_id, arrival_batch,
           person_id as previous_person_id
    from {{ this }}
    {%- if applied is not none %}
    where trim(user_id) in (select identifier from changed_identities where id_type = 'user')
       or trim(anonymous_id) in (
           select identifier from changed_identities where id_type = 'anonymous')
    {%- endif %}
),

reattributed as (
    select *
    from ({{ attributed_to_persons('stitched', 'identities') }}) as attributed
    where person_id <> previous_person_id
),

newly_arrived as (
    select *, null::string as previous_person_id
    from ({{ attributed_to_persons('arrived', 'identities') }}) as attributed
    where event_at >= (select cutoff_at from run)
      and event_id not in (select event_id from reattributed)
),

final as (
    select
        changed.event_id, changed.event_at, changed.person_id, changed.previous_person_id,
        run.batch, changed.user_id, changed.anonymous_id, changed.arrival_batch
    from (
        select event_id, event_at, person_id, previous_person_id, user_id, anonymous_id,
               arrival_batch
        from reattributed
        union all
        select event_id, event_at, person_id, previous_person_id, user_id, anonymous_id,
               arrival_batch
        from newly_arrived
    ) as changed
    cross join run
)

{% else %}

events as (
    select event_id, event_at, user_id, anonymous_id, arrival_batch
    from {{ ref('stg_events') }}
),

attributed as (
    select * from ({{ attributed_to_persons('events', 'identities') }}) as attributed
),

{% if is_incremental() %}

-- the night that adds the ids to a table stitched without them: every row, the changed
-- ones with their previous person, and the new events within the lookback
previous as (
    select event_id, person_id from {{ this }}
),

final as (
    select
        attributed.event_id, attributed.event_at, attributed.person_id,
        case when previous.person_id <> attributed.person_id then previous.person_id end
            as previous_person_id,
        run.batch, attributed.user_id, attributed.anonymous_id, attributed.arrival_batch
    from attributed
    left join previous using (event_id)
    cross join run
    where previous.event_id is not null or attributed.event_at >= run.cutoff_at
)

{% else %}

-- each row numbered by its day, counted back from the latest staged event's (0, -1, ...): a
-- run that finds nothing new re-processes the latest batch, as a re-run of a night does, and
-- one number for the whole build made that all of history (161 s at 10M events, more than
-- the full build itself)
final as (
    select
        event_id, event_at, person_id, null::string as previous_person_id,
        cast({{ dbt.datediff('(select max(event_at) from ' ~ ref('stg_events') ~ ')',
                             'event_at', 'day') }} as int) as batch,
        user_id, anonymous_id, arrival_batch
    from attributed
)

{% endif %}

{% endif %}

select * from final

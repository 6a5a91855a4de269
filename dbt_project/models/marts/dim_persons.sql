{#- One row per person (stitched identity): their ids, when they were seen, and whether their
    latest consent event withdraws personalization. -#}
with

identities as (
    select * from {{ ref('int_identities_stitched') }}
),

events as (
    select * from {{ ref('int_events_stitched') }}
),

sessions as (
    select * from {{ ref('fct_sessions') }}
),

ids as (
    select
        person_id,
        any_value(identity_key) as identity_key,
        min(identifier) filter (where id_type = 'user') as user_id,
        list_sort(list(identifier) filter (where id_type = 'user')) as user_ids,
        list_sort(list(identifier) filter (where id_type = 'anonymous')) as anonymous_ids
    from identities
    group by person_id
),

seen as (
    select
        person_id,
        min(event_at) as first_seen_at,
        max(event_at) as last_seen_at,
        arg_max(consents_to_personalization, (event_at, event_id))
            filter (where event_type = 'consent' and consents_to_personalization is not null)
            as consents_to_personalization,
        max(event_at) filter (where event_type = 'consent') as consent_updated_at
    from events
    group by person_id
),

visits as (
    select
        person_id,
        count(*) as sessions,
        arg_max(device_type, session_start_at) as latest_device_type,
        arg_max(country, session_start_at) as latest_country
    from sessions
    group by person_id
),

final as (
    select
        seen.person_id,
        ids.identity_key,
        ids.user_id,
        ids.user_id is not null as is_identified,
        coalesce(ids.user_ids, []) as user_ids,
        coalesce(ids.anonymous_ids, []) as anonymous_ids,
        len(coalesce(ids.anonymous_ids, [])) as devices,
        seen.first_seen_at,
        seen.last_seen_at,
        coalesce(visits.sessions, 0) as sessions,
        visits.latest_device_type,
        visits.latest_country,
        coalesce(not seen.consents_to_personalization, false) as is_opted_out,
        seen.consent_updated_at
    from seen
    left join ids using (person_id)
    left join visits using (person_id)
)

select * from final

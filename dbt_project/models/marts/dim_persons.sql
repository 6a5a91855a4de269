{#- One row per person (stitched identity): their ids, when they were seen, and whether their
    latest consent event withdraws personalization. -#}
with

identities as (
    select * from {{ ref('int_identities_stitched') }}
),

-- from staging, where consent events outlive raw retention (the record of consent)
consent_events as (
    select * from {{ ref('stg_events') }}
    where event_type = 'consent'
),

sessions as (
    select * from {{ ref('fct_sessions') }}
),

ids as (
    select
        person_id,
        any_value(identity_key) as identity_key,
        min(identifier) filter (where id_type = 'user') as user_id,
        {{ sorted_list('identifier', "id_type = 'user'") }} as user_ids,
        {{ sorted_list('identifier', "id_type = 'anonymous'") }} as anonymous_ids
    from identities
    group by person_id
),

attributed_consents as (
    {{ attributed_to_persons('consent_events', 'identities') }}
),

consents as (
    select
        person_id,
        {{ last_value_by('consents_to_personalization', '(event_at, event_id)') }}
            filter (where consents_to_personalization is not null)
            as consents_to_personalization,
        max(event_at) as consent_updated_at
    from attributed_consents
    group by person_id
),

-- from the sessions, which hold every attributed event and outlive raw retention
visits as (
    select
        person_id,
        min(session_start_at) as first_seen_at,
        max(session_end_at) as last_seen_at,
        count(*) as sessions,
        {{ last_value_by('device_type', 'session_start_at') }} as latest_device_type,
        {{ last_value_by('country', 'session_start_at') }} as latest_country
    from sessions
    group by person_id
),

final as (
    select
        visits.person_id,
        ids.identity_key,
        ids.user_id,
        ids.user_id is not null as is_identified,
        coalesce(ids.user_ids, {{ empty_list() }}) as user_ids,
        coalesce(ids.anonymous_ids, {{ empty_list() }}) as anonymous_ids,
        {{ list_length('ids.anonymous_ids') }} as devices,
        visits.first_seen_at,
        visits.last_seen_at,
        visits.sessions,
        visits.latest_device_type,
        visits.latest_country,
        coalesce(not consents.consents_to_personalization, false) as is_opted_out,
        consents.consent_updated_at
    from visits
    left join ids using (person_id)
    left join consents using (person_id)
)

select * from final

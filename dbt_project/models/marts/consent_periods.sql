{#- Consent per person and configured purpose as a timeline: one row per period in which one
    state held, from the statement that began it (valid_from; null: since ever, the purpose's
    default from var consent_purposes) to the next one (valid_to; null: still). The state at
    moment t is the period with valid_from < t <= valid_to: a statement counts from just after
    it was made. The post-hooks create marts.has_consent(person, purpose, as_of), the one
    check every step acting on people uses, and marts.consent_in_force(valid_from, valid_to,
    as_of), which picks the period in force at a moment. -#}
{{ config(post_hook=["{{ create_has_consent_macro() }}", "{{ create_in_force_macro() }}"]) }}

with

ledger as (
    select * from {{ ref('consent_ledger') }}
),

identities as (
    select * from {{ ref('int_identities_stitched') }}
),

purposes as (
    {{ consent_purpose_rows() }}
),

defaults as (
    select
        people.person_id,
        purposes.purpose,
        purposes.default_state as state,
        'default' as statement,
        null::string as policy_version,
        null::timestamp as valid_from,
        null::string as event_id
    from (select distinct person_id from identities) as people
    cross join purposes
),

stated as (
    select
        person_id,
        purpose,
        state,
        statement,
        policy_version,
        stated_at as valid_from,
        event_id
    from ledger
    where purpose in (select purpose from purposes)
),

timeline as (
    select * from defaults
    union all
    select * from stated
),

final as (
    select
        person_id,
        purpose,
        state,
        statement,
        policy_version,
        valid_from,
        lead(valid_from) over (
            partition by person_id, purpose order by valid_from nulls first, event_id nulls first
        ) as valid_to,
        last_value(state) over (
            partition by person_id, purpose order by valid_from nulls first, event_id nulls first
            rows between unbounded preceding and unbounded following
        ) = 'granted' as is_held_now,
        event_id
    from timeline
)

select * from final

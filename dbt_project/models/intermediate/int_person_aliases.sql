{#- Every person id an identity had and no longer has, with the person it belongs to now: a
    device's own anonymous person once the device logs in, a user's own person once their
    component gains a smaller user id. A person id is a function of its identity key (macro
    person_id), so the former ids follow from today's identities alone, with no history kept.
    Its post-hook re-keys the tables that outlive rebuilds (macro follow_person_merges). -#}
{{ config(post_hook="{{ follow_person_merges() }}") }}

with

identities as (
    select * from {{ ref('int_identities_stitched') }}
),

own_keys as (
    select
        (case id_type when 'user' then 'user:' else 'anon:' end) || identifier as own_key,
        identity_key,
        person_id
    from identities
),

final as (
    select distinct {{ person_id('own_key') }} as former_person_id, person_id
    from own_keys
    where own_key <> identity_key
)

select * from final

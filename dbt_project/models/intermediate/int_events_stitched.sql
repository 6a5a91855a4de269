{#- Every event with its person: by its own user id when it has a usable one, else by its
    device's stitched identity. Events before a login are therefore attributed to the person
    retroactively, on every run. Events whose only id is a placeholder (user_id 'null' and no
    device id) cannot be attributed and are left out of everything person-level. -#}
with

events as (
    select * from {{ ref('stg_events') }}
),

identities as (
    select * from {{ ref('int_identities_stitched') }}
),

keyed as (
    select
        events.*,
        {{ usable_id('events.user_id') }} as usable_user_id,
        {{ usable_id('events.anonymous_id') }} as usable_anonymous_id
    from events
),

final as (
    select
        keyed.* exclude (usable_user_id, usable_anonymous_id),
        coalesce(by_user.person_id, by_device.person_id) as person_id
    from keyed
    left join identities as by_user
        on by_user.id_type = 'user' and by_user.identifier = keyed.usable_user_id
    left join identities as by_device
        on by_device.id_type = 'anonymous' and by_device.identifier = keyed.usable_anonymous_id
    -- an event whose only id is a placeholder belongs to nobody we can tell apart
    where coalesce(by_user.person_id, by_device.person_id) is not null
)

select * from final

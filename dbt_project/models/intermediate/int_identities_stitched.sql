{#- Identity graph: anonymous ids (devices) and user ids are nodes, an event carrying both is an
    edge. Connected components become people; each component's key is its smallest user id
    (or, with no user id, the device's own id), so a person's id only changes when their
    component gains a smaller user id.
    The pairs come from int_identity_links, which outlives raw retention.
    Guards against over-merging: placeholder ids never join anything (var identity_blocklist),
    and a device seen with more than var identity_max_users_per_device user ids (a family
    tablet, a shop-floor kiosk) links nobody. -#}
with recursive

links as (
    select * from {{ ref('int_identity_links') }}
),

ids as (
    select
        {{ usable_id('anonymous_id') }} as anonymous_id,
        {{ usable_id('user_id') }} as user_id,
        first_seen_at
    from links
),

edges as (
    select anonymous_id, user_id, min(first_seen_at) as first_linked_at
    from ids
    where anonymous_id is not null and user_id is not null
    group by all
),

devices as (
    select
        anonymous_id,
        count(distinct user_id) as user_ids_seen,
        count(distinct user_id) > {{ var('identity_max_users_per_device') }} as is_shared_device
    from edges
    group by all
),

linking_edges as (
    select edges.*
    from edges
    join devices using (anonymous_id)
    where not devices.is_shared_device
),

{{ user_components('ids', 'linking_edges') }}

linked_devices as (
    select linking_edges.anonymous_id, min(users.component_user_id) as component_user_id,
           min(linking_edges.first_linked_at) as first_linked_at
    from linking_edges
    join users using (user_id)
    group by all
),

all_devices as (
    select distinct anonymous_id from ids where anonymous_id is not null
),

final as (
    select
        'user' as id_type,
        user_id as identifier,
        'user:' || component_user_id as identity_key,
        {{ person_id("'user:' || component_user_id") }} as person_id,
        false as is_shared_device,
        cast(null as timestamp) as first_linked_at
    from users
    union all
    select
        'anonymous' as id_type,
        all_devices.anonymous_id as identifier,
        coalesce('user:' || linked_devices.component_user_id,
                 'anon:' || all_devices.anonymous_id) as identity_key,
        {{ person_id("coalesce('user:' || linked_devices.component_user_id, "
                     ~ "'anon:' || all_devices.anonymous_id)") }} as person_id,
        coalesce(devices.is_shared_device, false) as is_shared_device,
        linked_devices.first_linked_at
    from all_devices
    left join linked_devices using (anonymous_id)
    left join devices using (anonymous_id)
)

select * from final

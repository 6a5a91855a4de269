{#- One row per segment and evaluated as_of_date: members, people who joined and who left. -#}

with

evaluations as (
    select * from {{ ref('segment_evaluations') }}
),

memberships as (
    select * from {{ ref('segment_memberships') }}
),

history as (
    select * from {{ ref('segment_membership_history') }}
),

members as (
    select segment_name, as_of_date, count(*) as members
    from memberships
    group by all
),

joined as (
    select segment_name, entered_at::date as as_of_date, count(*) as joined
    from history
    group by all
),

exited as (
    select segment_name, exited_at::date as as_of_date, count(*) as left_segment
    from history
    where exited_at is not null
    group by all
),

final as (
    select
        evaluations.segment_name,
        evaluations.as_of_date,
        coalesce(members.members, 0) as members,
        coalesce(joined.joined, 0) as joined,
        coalesce(exited.left_segment, 0) as left_segment,
        evaluations.definition_hash
    from evaluations
    left join members using (segment_name, as_of_date)
    left join joined using (segment_name, as_of_date)
    left join exited using (segment_name, as_of_date)
)

select * from final

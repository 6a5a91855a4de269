{#- One row per person, segment and entry: when the person entered the segment (the first as-of
    date of a run of consecutive evaluations that had them in it) and when they left (the first
    evaluation without them; null while they are still in). Rebuilt from the memberships. -#}

with

memberships as (
    select * from {{ ref('segment_memberships') }}
),

evaluations as (
    select * from {{ ref('segment_evaluations') }}
),

member_pairs as (
    select distinct person_id, segment_name from memberships
),

timeline as (
    -- every evaluation of the segment, for every person who was ever in it
    select
        member_pairs.person_id,
        member_pairs.segment_name,
        evaluations.as_of_date,
        memberships.person_id is not null as is_member,
        lead(evaluations.as_of_date) over by_person as next_evaluated_on
    from member_pairs
    join evaluations using (segment_name)
    left join memberships
        on memberships.person_id = member_pairs.person_id
       and memberships.segment_name = member_pairs.segment_name
       and memberships.as_of_date = evaluations.as_of_date
    window by_person as (
        partition by member_pairs.person_id, member_pairs.segment_name
        order by evaluations.as_of_date
    )
),

islands as (
    select
        *,
        row_number() over (partition by person_id, segment_name order by as_of_date)
            - row_number() over (partition by person_id, segment_name, is_member order by as_of_date)
            as island
    from timeline
),

final as (
    select
        person_id,
        segment_name,
        min(as_of_date)::timestamp as entered_at,
        -- the evaluation after the island's last day (array_agg keeps the null of "still in")
        (array_agg(next_evaluated_on order by as_of_date desc))[1]::timestamp as exited_at,
        count(*) as evaluations_in_segment
    from islands
    where is_member
    group by person_id, segment_name, island
)

select * from final

{#- The audience of each segment evaluation, as `microseg export` writes it: the members with
    marketing consent (var consent_purpose_of.exports) on the as-of date, and still, with who
    they are and since when they are in. A view: the export and an analyst read the same
    rows. Left to the export: the global holdout and experiment arms (experiments.yml), and
    the optional score and recommendation columns. -#}
{{ config(materialized='view') }}

with

memberships as (
    select * from {{ ref('segment_memberships') }}
),

evaluations as (
    select * from {{ ref('segment_evaluations') }}
),

history as (
    select * from {{ ref('segment_membership_history') }}
),

persons as (
    select * from {{ ref('dim_persons') }}
),

final as (
    select
        memberships.person_id,
        persons.user_id,
        memberships.segment_name,
        evaluations.segment_title,
        memberships.as_of_date,
        history.entered_at as in_segment_since,
        persons.last_seen_at,
        persons.latest_device_type as device_type,
        persons.latest_country as country,
        memberships.evidence,
        {{ consent_purpose_of('exports') }} as consent_purpose
    from memberships
    join persons using (person_id)
    join evaluations using (segment_name, as_of_date)
    left join history
      on history.person_id = memberships.person_id
     and history.segment_name = memberships.segment_name
     and history.entered_at <= memberships.as_of_date
     and (history.exited_at is null or history.exited_at > memberships.as_of_date)
    where {{ has_consent('memberships.person_id', consent_purpose_of('exports'),
                         'memberships.as_of_date', ref('consent_periods')) }}
)

select * from final

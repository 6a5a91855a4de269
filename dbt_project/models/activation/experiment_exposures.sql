{#- One row per experiment and person: the first moment the person's arm acted on them, after
    their assignment - a message of the experiment went out (its payload names the experiment
    and arm), or would have and was withheld (control, suppression
    experiment_control:<experiment>), or another arm's definition of the trigger fired where
    the rules would have let it act (suppression experiment_arm:<experiment>: both arms of a
    threshold test are exposed when either definition first acts); for a targeted segment, the
    start of the first day its audience was exported with them in it (treatment) or left out
    (control; segment_exposures). The analysis compares arms over exposed people only, not
    diluted by everyone assigned. A view. -#}
{{ config(materialized='view') }}

with

assignments as (
    select * from {{ source('activation', 'experiment_assignments') }}
),

acted as (
    select person_id, trigger_name, fired_at, session_id,
           payload ->> '$.experiment.name' as experiment
    from {{ source('activation', 'activation_outbox') }}
    union all
    select person_id, trigger_name, fired_at, session_id,
           regexp_extract(reason, '^experiment_(control|arm):(.*)$', 2) as experiment
    from {{ source('activation', 'trigger_suppressions') }}
    where reason like 'experiment_control:%' or reason like 'experiment_arm:%'
),

exposed as (
    select
        assignments.experiment,
        assignments.person_id,
        assignments.arm,
        acted.fired_at as exposed_at,
        acted.trigger_name,
        acted.session_id
    from assignments
    join acted
      on acted.person_id = assignments.person_id
     and acted.experiment = assignments.experiment
     and acted.fired_at >= assignments.assigned_at
    union all
    select
        experiment,
        person_id,
        arm,
        as_of_date::timestamp as exposed_at,
        null::varchar as trigger_name,
        null::varchar as session_id
    from {{ source('activation', 'segment_exposures') }}
),

final as (
    select *
    from exposed
    qualify row_number() over (
        partition by experiment, person_id order by exposed_at, trigger_name
    ) = 1
)

select * from final

{#- Every consent statement: one row per consent event and purpose it speaks for. Events say
    it three ways (docs/events.md): a `purposes` object of purpose -> true/false (the canonical
    and Segment shape), `all_purposes: true` with a `consent_action` (Snowplow's "withdraw
    all"), and the legacy `opt_out: true` (withdrawn for every purpose). A purpose named in the
    object wins over "all" in the same event. Rows are only ever added; the person follows
    identity stitching, and a late consent event counts whenever it arrives. -#}
with

consent_events as (
    select * from {{ ref('stg_events') }}
    where event_type = 'consent'
),

identities as (
    select * from {{ ref('int_identities_stitched') }}
),

attributed as (
    {{ attributed_to_persons('consent_events', 'identities') }}
),

purposes as (
    {{ consent_purpose_rows() }}
),

named as (
    select
        event_id,
        {{ json_object_keys('properties', '$.purposes') }} as purpose
    from attributed
    where {{ is_json_object('properties', '$.purposes') }}
),

named_statements as (
    select
        attributed.*,
        named.purpose,
        case
            when try_cast({{ json_text('attributed.properties', '$.purposes', 'named.purpose') }} as boolean)
                then 'granted'
            when ({{ json_text('attributed.properties', '$.consent_action') }}) = 'withdrawn' then 'withdrawn'
            else 'denied'
        end as state,
        'purposes' as statement,
        1 as precedence
    from named
    join attributed using (event_id)
),

all_purpose_statements as (
    select
        attributed.*,
        purposes.purpose,
        case
            when try_cast({{ json_text('attributed.properties', '$.opt_out') }} as boolean) then 'withdrawn'
            else {{ json_text('attributed.properties', '$.consent_action') }}
        end as state,
        case
            when try_cast({{ json_text('attributed.properties', '$.opt_out') }} as boolean) then 'opt_out'
            else 'all_purposes'
        end as statement,
        2 as precedence
    from attributed
    cross join purposes
    where try_cast({{ json_text('attributed.properties', '$.opt_out') }} as boolean)
       or (try_cast({{ json_text('attributed.properties', '$.all_purposes') }} as boolean)
           and ({{ json_text('attributed.properties', '$.consent_action') }}) in ('granted', 'denied', 'withdrawn'))
),

statements as (
    select *
    from (
        select * from named_statements
        union all
        select * from all_purpose_statements
    )
    qualify row_number() over (partition by event_id, purpose order by precedence) = 1
),

final as (
    select
        person_id,
        purpose,
        state,
        statement,
        {{ json_text('properties', '$.policy_version') }} as policy_version,
        event_at as stated_at,
        event_id,
        source_file
    from statements
)

select * from final

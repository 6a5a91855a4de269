{#- Fired, capped (by cap), expired, sent and failed per day, trigger and channel. Every
    firing is in exactly one of: a message (sent, failed or pending) or a suppression.
    A view: current as soon as a run has delivered (`microseg publish` snapshots it as a table). -#}
{{ config(materialized='view') }}

with

firings as (
    select fired_at::date as fired_on, trigger_name, channel, count(*) as fired
    from {{ ref('trigger_firings') }}
    group by all
),

message_status as (
    select
        outbox.fired_at::date as fired_on,
        outbox.trigger_name,
        outbox.channel,
        case
            when bool_or(deliveries.status in ('rejected', 'dead_letter')) then 'failed'
            when count(deliveries.status) filter (where deliveries.status = 'sent')
                 = len(any_value(outbox.destinations)) then 'sent'
            else 'pending'
        end as status
    from {{ source('activation', 'activation_outbox') }} as outbox
    left join {{ source('activation', 'activation_deliveries') }} as deliveries
        using (idempotency_key)
    group by outbox.idempotency_key, outbox.fired_at, outbox.trigger_name, outbox.channel
),

messages as (
    select
        fired_on,
        trigger_name,
        channel,
        count(*) filter (where status = 'sent') as sent,
        count(*) filter (where status = 'failed') as failed,
        count(*) filter (where status = 'pending') as pending
    from message_status
    group by all
),

-- a suppression is counted on its firing's day and channel (one firing per trigger and
-- session; a re-run may have moved the moment since): a trigger whose channel changed within a
-- day has a row per channel, each counting its own firings once
suppressed as (
    select suppressions.reason, trigger_name, firings.fired_at, firings.channel
    from {{ source('activation', 'trigger_suppressions') }} as suppressions
    join {{ ref('trigger_firings') }} as firings using (trigger_name, session_id)
),

suppressions as (
    select
        suppressions.fired_at::date as fired_on,
        suppressions.trigger_name,
        suppressions.channel,
        count(*) filter (where reason = 'expired') as expired,
        count(*) filter (where reason like 'not_consented:%') as not_consented,
        count(*) filter (where reason = 're_eligibility') as re_eligibility,
        count(*) filter (where reason like 'capped:%') as capped,
        count(*) filter (where reason = 'holdout') as holdout,
        count(*) filter (where reason like 'experiment_control:%') as experiment_control,
        count(*) filter (
            where reason like 'experiment_arm:%' or reason like 'experiment_variant:%'
        ) as other_definition
    from suppressed as suppressions
    group by all
),

capped_by as (
    -- keys in order, so a re-run writes the same object
    select fired_on, trigger_name, channel,
           to_json(map_from_entries(list(struct_pack(k := cap, v := n) order by cap))) as capped_by
    from (
        select fired_at::date as fired_on, trigger_name, channel,
               substr(reason, length('capped:') + 1) as cap, count(*) as n
        from suppressed
        where reason like 'capped:%'
        group by all
    )
    group by all
),

final as (
    select
        firings.fired_on,
        firings.trigger_name,
        firings.channel,
        firings.fired,
        coalesce(messages.sent, 0) as sent,
        coalesce(messages.failed, 0) as failed,
        coalesce(messages.pending, 0) as pending,
        coalesce(suppressions.expired, 0) as expired,
        coalesce(suppressions.not_consented, 0) as not_consented,
        coalesce(suppressions.re_eligibility, 0) as re_eligibility,
        coalesce(suppressions.capped, 0) as capped,
        coalesce(suppressions.holdout, 0) as holdout,
        coalesce(suppressions.experiment_control, 0) as experiment_control,
        coalesce(suppressions.other_definition, 0) as other_definition,
        coalesce(capped_by.capped_by, '{}'::json) as capped_by
    from firings
    left join messages using (fired_on, trigger_name, channel)
    left join suppressions using (fired_on, trigger_name, channel)
    left join capped_by using (fired_on, trigger_name, channel)
)

select * from final

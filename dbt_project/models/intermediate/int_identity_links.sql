{#- Every (anonymous_id, user_id) pair events have carried, either side possibly null, with
    when it was first seen: what identity stitching needs of the events, kept as they expire
    (raw retention, microseg/privacy/retention.py). Each build adds the staged events to the
    links built before, so a full refresh keeps them too; erasure deletes a person's rows.
    On Spark, which rebuilds every model from raw on each run (and refuses to once retention
    has deleted events), the links are those of the staged events alone. -#}
{%- set built_before = target.type != 'spark'
      and adapter.get_relation(this.database, this.schema, this.identifier) %}

with

pairs as (
    select anonymous_id, user_id, event_at as first_seen_at from {{ ref('stg_events') }}
    {% if built_before %}
    union all
    select anonymous_id, user_id, first_seen_at from {{ this }}
    {% endif %}
),

final as (
    select anonymous_id, user_id, min(first_seen_at) as first_seen_at
    from pairs
    group by all
)

select * from final

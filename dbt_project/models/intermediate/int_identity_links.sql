{#- Every (anonymous_id, user_id) pair events have carried, either side possibly null, with
    when it was first seen: what identity stitching needs of the events, kept as they expire
    (raw retention, microseg/privacy/retention.py). Each build adds the staged events to the
    links built before, so a full refresh keeps them too; erasure deletes a person's rows.
    On Spark, which rebuilds every model from raw on each run (and refuses to once retention
    has deleted events), the links are those of the staged events alone.
    Staging is appended run by run, each run's rows stamped with when it began (staged_at): a
    build reads only the rows staged after the latest run the links were built through
    (linked_through_staged_at), not every staged event again (0.4 s of a 10M-event night,
    before stitching can start); a staging rebuilt whole stamps all its events anew, which are
    then all read. Not arrival_batch: staging numbers a run one past the highest number left
    in the table, so a batch whose every event was erased gets its number given again. -#}
{%- set built_before = target.type != 'spark'
      and adapter.get_relation(this.database, this.schema, this.identifier) %}
{%- set linked_through = none %}
{%- if built_before and execute and 'linked_through_staged_at' in (
      adapter.get_columns_in_relation(this) | map(attribute='name') | list) %}
{%-   set linked_through = run_query(
          'select max(linked_through_staged_at) from ' ~ this).columns[0].values()[0] %}
{%- endif %}

with

pairs as (
    select anonymous_id, user_id, event_at as first_seen_at from {{ ref('stg_events') }}
    {%- if linked_through is not none %}
    where staged_at > cast('{{ linked_through }}' as timestamp)
    {%- endif %}
    {% if built_before %}
    union all
    select anonymous_id, user_id, first_seen_at from {{ this }}
    {% endif %}
),

final as (
    select
        anonymous_id,
        user_id,
        min(first_seen_at) as first_seen_at,
        (select max(staged_at) from {{ ref('stg_events') }}) as linked_through_staged_at
    from pairs
    group by all
)

select * from final

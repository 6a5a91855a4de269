{#- Events staged but not stitched: they arrived with an event time further back than
    var late_arrival_hours behind what incremental runs had already processed. The next
    `microseg transform --full-refresh` takes them in; after raw retention a full refresh is
    refused, and they expire once older than its horizon (macros/retention.sql).
    Rebuilt whole each run from the two tables as they are (no watermark of its own): a night
    that failed after staging would otherwise leave its arrivals out of the list. -#}
{{ config(materialized='table') }}

{#- before the retention horizon nothing is built any more (kept consent records);
    placeholder-only events are left out on purpose, not late -#}
{%- set after_horizon -%}
    event_at >= {{ retention_horizon() }}
{%- endset -%}
{%- set staged_to_build -%}
    {{ after_horizon }}
    and ({{ usable_id('user_id') }} is not null or {{ usable_id('anonymous_id') }} is not null)
{%- endset %}

-- Stitched events are staged events with their arrival batch copied, so an arrival batch holds
-- a late event exactly when it has more staged events than stitched ones: only batches whose
-- counts differ are looked up event by event (an anti join of every staged event took 7.7 s of
-- a 10M-event night at a 3GB limit). Staging rebuilt alone numbers all its events anew: the
-- batches stitched before then count stitched events that staging no longer has under that
-- number, so they are looked up too. The batches are counted first and written into the
-- model as constants: staging is appended batch by batch, so DuckDB then reads only their
-- rows (a wide scan of all 10.9M staged rows for the night's few late ones took 1.6 s).
-- Telling every staged event buildable or not took 1 s more: all staged events are counted
-- first (a batch with as many stitched ones is whole), then only the other batches' are told
-- apart. Narrow keys first, the event's columns joined back for the few late ones.
{#- both tables exist once a build has reached this model (`dbt compile` may come first) -#}
{%- set built = execute and load_relation(ref('stg_events')) is not none
                and load_relation(ref('int_events_stitched')) is not none %}
{%- set batches = namespace(condition='true') %}
{%- for staged_rows in ([after_horizon, staged_to_build] if built else []) %}
{%-   set differing -%}
    select arrival_batch
    from (
        select coalesce(arrival_batch, 0) as arrival_batch, 1 as staged, 0 as stitched
        from {{ ref('stg_events') }}
        where {{ staged_rows }} and {{ batches.condition }}
        union all
        select coalesce(arrival_batch, 0), 0, 1
        from {{ ref('int_events_stitched') }}
        where {{ after_horizon }} and {{ batches.condition }}
    ) as sides
    group by arrival_batch
    having sum(staged) <> sum(stitched)
{%-   endset %}
{%-   set unfinished = run_query(differing).columns[0].values() | map('int') | list %}
{#-   0 stands for the rows staged before arrival batches existed (null) -#}
{%-   set numbered = unfinished | reject('equalto', 0) | list %}
{%-   set condition -%}
    ({{ 'arrival_batch in (' ~ (numbered | join(', ')) ~ ')' if numbered else 'false' }}
     {{- ' or arrival_batch is null' if 0 in unfinished }})
{%-   endset %}
{%-   set batches.condition = condition %}
{%- endfor %}
{%- set in_unfinished = batches.condition if built else '(false)' %}

with

late as (
    select staged.event_id
    from (
        select event_id from {{ ref('stg_events') }}
        where {{ staged_to_build }} and {{ in_unfinished }}
    ) as staged
    {{ anti_join() }} (
        select event_id from {{ ref('int_events_stitched') }}
        where {{ after_horizon }} and {{ in_unfinished }}
    ) as stitched using (event_id)
),

final as (
    select * from {{ ref('stg_events') }}
    where {{ in_unfinished }}
      and event_id in (select event_id from late)
)

select * from final

{#- Incremental runs rewrite whole sessions. Every event row that int_events_sessionized
    rewrote in this run carries the run's `batch` and the session it belonged to before
    (previous_session_id); session-grain marts delete those stale sessions first (pre_hook)
    and then insert the sessions of the batch. A full refresh simply rebuilds everything. -#}

{% macro current_batch(relation) -%}
    (select max(batch) from {{ relation }})
{%- endmacro %}

{#- Also the rows of people who no longer exist (an identity merged into another): their
    sessions were rewritten under the surviving person, except those raw retention had already
    expired, which go with them (macros/retention.sql). -#}
{% macro delete_stale_sessions() -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where session_id in (
        select previous_session_id from {{ ref('int_events_sessionized') }}
        where batch = {{ current_batch(ref('int_events_sessionized')) }}
          and previous_session_id is not null
    )
       or person_id not in (select person_id from {{ ref('int_identities_stitched') }})
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- In an incremental run, true for rows of the sessions rewritten in this run. -#}
{% macro in_rewritten_sessions(column='session_id') -%}
    {%- if is_incremental() -%}
    {{ column }} in (
        select session_id from {{ ref('int_events_sessionized') }}
        where batch = {{ current_batch(ref('int_events_sessionized')) }}
    )
    {%- else -%}
    true
    {%- endif -%}
{%- endmacro %}

{#- People whose facts changed in this run, with the first day that changed: the first day of
    their rewritten events, or the beginning of time for people who lost re-attributed events.
    Daily person models rewrite these people from that day on; after raw retention never
    before its horizon (the days before it are final: their events are gone). -#}
{% macro touched_people() -%}
    select person_id, greatest(min(restart_date), {{ retention_horizon() }}) as restart_date
    from (
        select person_id, min(event_at)::date as restart_date
        from {{ ref('int_events_sessionized') }}
        where batch = {{ current_batch(ref('int_events_sessionized')) }}
        group by all
        union all
        select previous_person_id, {{ beginning_of_time() }}
        from {{ ref('int_events_stitched') }}
        where batch = {{ current_batch(ref('int_events_stitched')) }}
          and previous_person_id is not null
    )
    group by all
{%- endmacro %}

{#- pre_hook for daily person models: remove the rows of touched people from their restart
    day on (`date_column` >= restart, or > restart for as-of dates, which describe the days
    before them), and every row of people who no longer exist (merged into another; without
    retention their events moved, so they were touched from the beginning anyway). -#}
{% macro delete_touched_days(date_column, strictly_after=false) -%}
    {%- if is_incremental() -%}
    delete from {{ this }} as target
    where exists (
            select 1 from ({{ touched_people() }}) as touched
            where target.person_id = touched.person_id
              and target.{{ date_column }} {{ '>' if strictly_after else '>=' }}
                  touched.restart_date
        )
       or target.person_id not in (select person_id from {{ ref('int_identities_stitched') }})
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- In an incremental run, true for facts of touched people dated on or after their restart
    day (see touched_people); always true in a full build. A scalar subquery correlated on the
    person alone (DuckDB joins it once per person; an EXISTS with the date inequality was 7x
    slower at 10M events). Its columns are renamed so that an unqualified `person_id` in the
    arguments means the model's, not touched's (which once made the condition true of
    everyone: every night rebuilt all history). -#}
{% macro is_touched(person_column, date_expression) -%}
    {%- if is_incremental() -%}
    ({{ date_expression }}) >= (
        select min(touched_restart_date)
        from (select person_id as touched_person_id, restart_date as touched_restart_date
              from ({{ touched_people() }}) as people) as touched
        where touched_person_id = {{ person_column }}
    )
    {%- else -%}
    true
    {%- endif -%}
{%- endmacro %}

{#- The materialization of the event-, session- and day-grain models: incremental on DuckDB;
    on Spark a table rebuilt whole on every run, since Parquet tables cannot delete the stale
    rows an incremental run replaces (an incremental strategy for Spark is still to come). -#}
{% macro incremental_materialization() -%}
    {{ return('table' if target.type == 'spark' else 'incremental') }}
{%- endmacro %}

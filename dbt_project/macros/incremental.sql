{#- Incremental runs rewrite whole sessions. Every event row that int_events_sessionized
    rewrote in this run carries the run's `batch` and the session it belonged to before
    (previous_session_id); session-grain marts delete those stale sessions first (pre_hook)
    and then insert the sessions of the batch. A full refresh simply rebuilds everything.

    Batch numbers: a full build numbers the event rows 0 and below (int_events_stitched
    numbers them by day, and the models after it copy each row's), and each incremental run
    after it writes one more than the highest, from 1; so a latest batch of 0 or below means
    a full build wrote the table and no night has run since. -#}

{% macro current_batch(relation, column='batch') -%}
    (select max({{ column }}) from {{ relation }})
{%- endmacro %}

{#- Also the rows of people who no longer exist (an identity merged into another): their
    sessions were rewritten under the surviving person, except those raw retention had already
    expired, which go with them (macros/retention.sql). -#}
{% macro delete_stale_sessions() -%}
    {%- if is_incremental() -%}
    {%- set stale -%}
    target.session_id in (
        select previous_session_id from {{ ref('int_events_sessionized') }}
        where batch = {{ current_batch(ref('int_events_sessionized')) }}
          and previous_session_id is not null
    )
       or target.person_id not in (select person_id from {{ ref('int_identities_stitched') }})
    {%- endset -%}
    {{ delete_where(stale) }}
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

{#- int_events_paged's events, in an incremental run those of the sessions rewritten in it:
    each row carries the int_events_sessionized batch that wrote it (a full build's rows, their
    own: numbered by day) and the table is appended
    batch by batch, so DuckDB reads the batch's row groups only (matching session ids read
    every wide row of the history: 1 s of each mart's 10M-event night). -#}
{% macro rewritten_events() -%}
    (select * from {{ ref('int_events_paged') }}
     {%- if is_incremental() %}
     where batch = {{ current_batch(ref('int_events_sessionized')) }}
     {%- endif %})
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
    {%- set stale -%}
    exists (
            select 1 from ({{ touched_people() }}) as touched
            where target.person_id = touched.person_id
              and target.{{ date_column }} {{ '>' if strictly_after else '>=' }}
                  touched.restart_date
        )
       or target.person_id not in (select person_id from {{ ref('int_identities_stitched') }})
    {%- endset -%}
    {{ delete_where(stale) }}
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- `rows` (a relation or CTE with person_id), in an incremental run only those of touched
    people dated on or after their restart day (see touched_people); all of them in a full
    build. Use as `from {{ touched_only('events', 'event_at::date') }} as events`. A hash join
    on the person with the day as its residual condition: a correlated subquery per row was
    decorrelated into a join back over every event (6 s of a 10M-event night in
    int_person_days alone), an EXISTS with the date inequality was slower still. touched's
    columns are renamed so that `date_expression` can only mean the columns of `rows`. -#}
{% macro touched_only(rows, date_expression) -%}
    {%- if is_incremental() -%}
    (select candidates.*
     from {{ rows }} as candidates
     join (select person_id as touched_person_id, restart_date as touched_restart_date
           from ({{ touched_people() }}) as people) as touched
       on touched.touched_person_id = candidates.person_id
      and ({{ date_expression }}) >= touched.touched_restart_date)
    {%- else -%}
    {{ rows }}
    {%- endif -%}
{%- endmacro %}

{#- A pre_hook deleting the rows of {{ this }} (named `target` in `condition`) where
    `condition` holds. DuckDB deletes in place. Parquet tables cannot delete: on Spark the
    table is rewritten without them (spark_rewrite) while the hook renders, which leaves the
    hook no statement to run. -#}
{% macro delete_where(condition) -%}
    {{ return(adapter.dispatch('delete_where')(condition)) }}
{%- endmacro %}

{% macro default__delete_where(condition) -%}
    delete from {{ this }} as target where {{ condition }}
{%- endmacro %}

{% macro spark__delete_where(condition) -%}
    {%- do spark_rewrite(condition) -%}
{%- endmacro %}

{#- Copy-on-write on Spark: {{ this }} rewritten without the rows where `condition` holds and
    with the rows of the table `added_rows`, if given. -#}
{% macro spark_rewrite(condition, added_rows=none) -%}
    {%- set kept = spark_scratch_table('kept') -%}
    {%- set rows -%}
        select * from {{ this }} as target where not coalesce({{ condition }}, false)
        {%- if added_rows %}
        union all
        select {{ adapter.get_columns_in_relation(this) | map(attribute='quoted') | join(', ') }}
        from {{ added_rows }}
        {%- endif %}
    {%- endset -%}
    {%- do run_query('create table ' ~ kept ~ ' using parquet as ' ~ rows) -%}
    {%- do run_query('insert overwrite table ' ~ this ~ ' select * from ' ~ kept) -%}
    {%- do run_query('drop table ' ~ kept) -%}
{%- endmacro %}

{#- A Parquet table beside {{ this }} for one step of a Spark incremental run (dropped first:
    a failed run may have left it). -#}
{% macro spark_scratch_table(suffix) -%}
    {%- set scratch = this.incorporate(path={"identifier": this.identifier ~ '__' ~ suffix}) -%}
    {%- do run_query('drop table if exists ' ~ scratch) -%}
    {{ return(scratch) }}
{%- endmacro %}

{#- dbt-spark's incremental strategies on Parquet are append and insert_overwrite; the models
    here replace rows by key (delete+insert, as on DuckDB). The run's new rows are written
    first (they are computed from the table as it was), then the table is rewritten with them
    in place of the rows with their keys; the main statement is the last step, dropping the
    scratch table. -#}
{% macro dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format) -%}
    {%- if raw_strategy == 'delete+insert' and file_format == 'parquet' -%}
        {{ return(raw_strategy) }}
    {%- endif -%}
    {{ return(dbt.dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format)) }}
{%- endmacro %}

{% macro dbt_spark_get_incremental_sql(strategy, source, target, existing, unique_key, incremental_predicates) -%}
    {%- if strategy != 'delete+insert' -%}
        {{ return(dbt.dbt_spark_get_incremental_sql(
            strategy, source, target, existing, unique_key, incremental_predicates)) }}
    {%- endif -%}
    {%- set new_rows = spark_scratch_table('new') -%}
    {%- do run_query('create table ' ~ new_rows ~ ' using parquet as select * from ' ~ source) -%}
    {%- set keys = [unique_key] if unique_key is string else unique_key -%}
    {%- set same_key -%}
        exists (select 1 from {{ new_rows }} as new
                where {% for key in keys %}new.{{ key }} = target.{{ key }}{{ ' and ' if not loop.last }}{% endfor %})
    {%- endset -%}
    {%- do spark_rewrite(same_key, added_rows=new_rows) -%}
    drop table {{ new_rows }}
{%- endmacro %}

{#- The identity map int_events_stitched applied in its latest run, kept beside it. -#}
{% macro applied_identities() -%}
    {{ return(this.incorporate(path={"identifier": this.identifier ~ '__identities'})) }}
{%- endmacro %}

{#- A hook's statement making `relation` a table of `query`'s rows (Parquet tables are
    dropped first: Spark replaces only its v2 tables). -#}
{% macro replace_table(relation, query) -%}
    {{ return(adapter.dispatch('replace_table')(relation, query)) }}
{%- endmacro %}

{% macro default__replace_table(relation, query) -%}
    create or replace table {{ relation }} as {{ query }}
{%- endmacro %}

{% macro spark__replace_table(relation, query) -%}
    {%- do run_query('drop table if exists ' ~ relation) -%}
    create table {{ relation }} using parquet as {{ query }}
{%- endmacro %}

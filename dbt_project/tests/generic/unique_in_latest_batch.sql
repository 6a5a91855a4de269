{#- `unique` for an incremental event table: only the ids of its latest batch are looked up in
    the whole table, a semi-join instead of grouping every id of the history each night. As
    strict, since a run writes only rows of its own batch, and the older batches were tested
    when they were written. A table of one batch (after a full build of staging) is grouped
    whole: the semi-join would look every id up in itself, twice the work (2.6 s against 1.3 s
    for 10.6M ids). A model that replaces rows by this very key (unique_key, delete+insert)
    deletes the older rows of the batch's ids before it inserts the batch, so only the batch
    itself can repeat an id: its rows alone are grouped, a read of the night's row groups
    instead of every id of the history (0.3 s a table at 10M events; staging's test, which
    still looks its ids up, took 3.6 s at 100M). Such a table written by a full build since
    its last night (int_events_stitched numbers its rows by day, 0 and below) is grouped whole.
    `batch_column`: the column that numbers the runs (stg_events: arrival_batch). -#}
{% test unique_in_latest_batch(model, column_name, batch_column='batch') %}
{%- set replaces_by_key = execute and graph.nodes.values()
      | selectattr('resource_type', 'equalto', 'model')
      | selectattr('name', 'equalto', model.identifier)
      | selectattr('config.unique_key', 'equalto', column_name)
      | selectattr('config.incremental_strategy', 'equalto', 'delete+insert')
      | list | length > 0 %}
{#- the latest batch as a constant, which lets DuckDB skip the other batches' row groups -#}
{%- set found = run_query('select count(distinct ' ~ batch_column ~ '), max(' ~ batch_column
                          ~ ') from ' ~ model)
                if execute and load_relation(model) is not none else none %}
{%- set batches, latest = (found.rows[0] | list) if found is not none else (none, none) %}
{%- set latest_batch = latest if latest is not none else current_batch(model, batch_column) %}
select {{ column_name }}, count(*) as rows_with_id
from {{ model }}
{%- if replaces_by_key %}
{%-   if latest is none or latest > 0 %}
where {{ batch_column }} = {{ latest_batch }}
{%-   endif %}
{%- elif batches is none or batches > 1 %}
where {{ column_name }} in (
    select {{ column_name }} from {{ model }}
    where {{ batch_column }} = {{ latest_batch }}
)
{%- endif %}
group by {{ column_name }}
having count(*) > 1
{% endtest %}

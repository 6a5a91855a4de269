{#- A DuckDB full build of an event-grain model whose join and window outgrow memory runs in
    slices of its sessions, each a statement of its own that fits: int_events_paged at 10M
    events and a 3GB limit spilled 3 GiB in one statement and nothing in four, 10% faster; at
    100M its spill filled the disk. The model builds slice 0 and marks the count in its SQL;
    a post_hook inserts the others (slices_of reads the mark: a hook renders after the table
    exists, when is_incremental() no longer says whether this build was a full one). -#}

{#- How many slices this build of the model takes over `sessions` (a relation with
    session_id): one in an incremental run, on Spark and in unit tests; else about
    var events_per_slice events each (none: an event a KiB of DuckDB's memory limit). -#}
{% macro event_slices(sessions) -%}
    {%- if not execute or is_incremental() or target.type != 'duckdb'
          or model.resource_type == 'unit_test' or load_relation(sessions) is none -%}
        {{ return(1) }}
    {%- endif -%}
    {%- set memory_limit = "current_setting('memory_limit')" -%}
    {%- set per_slice = var('events_per_slice') or (
        "split_part(" ~ memory_limit ~ ", ' ', 1)::double * 1024 ^ (list_position("
        ~ "['KiB', 'MiB', 'GiB', 'TiB'], split_part(" ~ memory_limit ~ ", ' ', 2)) - 1)") -%}
    {%- set count -%}
        select greatest(1, ceil(count(*) / ({{ per_slice }})))::integer from {{ sessions }}
    {%- endset -%}
    {{ return(run_query(count).columns[0].values()[0] | int) }}
{%- endmacro %}

{#- SQL: true for the rows of slice `index` of `slices` (and the mark slices_of reads). -#}
{% macro in_slice(session_id, index, slices) -%}
    {%- if slices > 1 -%}
        hash({{ session_id }}) % {{ slices }} = {{ index }} /* slice {{ index }} of {{ slices }} */
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- The slice count marked in compiled SQL (in_slice); 1 when it was not sliced. -#}
{% macro slices_of(compiled_sql) -%}
    {%- set mark = modules.re.search('/\* slice 0 of (\d+) \*/', compiled_sql or '') -%}
    {{ return(mark.group(1) | int if mark else 1) }}
{%- endmacro %}

{#- A DuckDB full build of an event-grain model whose join and window outgrow memory runs in
    slices of its sessions, each a statement of its own that fits: int_events_paged at 10M
    events and a 3GB limit spilled 3 GiB in one statement and nothing in four, 10% faster; at
    100M its spill filled the disk. The model builds slice 0 and marks the count in its SQL;
    a post_hook inserts the others (slices_of reads the mark: a hook renders after the table
    exists, when is_incremental() no longer says whether this build was a full one). Both a
    slice and a night read staging by event time, as literals its zone maps can use. -#}

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

{#- The slices of a build over `sessions` (int_events_sessionized) in `slices` parts: ranges
    of session_start_at (its quantiles), each with the span of event_at its events take, so that
    a slice reads only that part of the events (staging's zone maps skip the rest; slices by a
    hash of session_id read all of staging for each). A list of (start_from, start_before,
    first_event_at, last_event_at), timestamps as text: none at the open ends and for an empty
    slice's span; empty for one slice. Both renders of a build (the model and its post_hook)
    compute the same slices from the same table. -#}
{% macro slice_spans(sessions, slices) -%}
    {%- if slices <= 1 -%}{{ return([]) }}{%- endif -%}
    {%- set fractions = [] -%}
    {%- for k in range(1, slices) %}{% do fractions.append(k / slices) %}{% endfor -%}
    {%- set quantiles -%}
        select unnest(quantile_disc(session_start_at, [{{ fractions | join(', ') }}]))::varchar
        from {{ sessions }}
    {%- endset -%}
    {%- set bounds = [none] + (run_query(quantiles).columns[0].values() | list) + [none] -%}
    {%- set span_columns = [] -%}
    {%- for k in range(slices) -%}
        {%- set in_range = session_start_in(bounds[k], bounds[k + 1]) -%}
        {%- do span_columns.append('min(event_at) filter (where ' ~ in_range ~ ')::varchar') -%}
        {%- do span_columns.append('max(event_at) filter (where ' ~ in_range ~ ')::varchar') -%}
    {%- endfor -%}
    {%- set span_row = run_query('select ' ~ span_columns | join(', ') ~ ' from ' ~ sessions).rows[0] -%}
    {%- set spans = [] -%}
    {%- for k in range(slices) -%}
        {%- do spans.append((bounds[k], bounds[k + 1], span_row[2 * k], span_row[2 * k + 1])) -%}
    {%- endfor -%}
    {{ return(spans) }}
{%- endmacro %}

{#- A night's events split at a time: staging is appended in time order, so from that time on
    DuckDB reads it through its zone maps (a join on event_id read every wide row of the
    history), and the few older events (a re-attributed person's past, a session reaching
    back) are looked up by id. The time before which 1% of the run's `events` lie; none on
    Spark and when the run has no events. -#}
{% macro recent_events_from(events) -%}
    {%- if not execute or target.type != 'duckdb' or model.resource_type == 'unit_test' -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set found = run_query('select quantile_disc(event_at, 0.01)::varchar from ' ~ events
                              ~ ' as events') -%}
    {{ return(found.columns[0].values()[0]) }}
{%- endmacro %}

{% macro timestamp_literal(value) -%}
    {{ return("'" ~ value ~ "'::timestamp" if value is not none else 'null') }}
{%- endmacro %}

{#- SQL: true for a session_start_at in [start_from, start_before) (none: no bound), as plain
    comparisons, which DuckDB's zone maps read. -#}
{% macro session_start_in(start_from, start_before) -%}
    {%- set bounds = [] -%}
    {%- if start_from is not none -%}
        {%- do bounds.append('session_start_at >= ' ~ timestamp_literal(start_from)) -%}
    {%- endif -%}
    {%- if start_before is not none -%}
        {%- do bounds.append('session_start_at < ' ~ timestamp_literal(start_before)) -%}
    {%- endif -%}
    {{ return(bounds | join(' and ') or 'true') }}
{%- endmacro %}

{#- SQL: true for the sessions of slice `index` of `spans` (and the mark slices_of reads). -#}
{% macro in_slice(spans, index) -%}
    {%- if spans | length > 1 -%}
        {{ session_start_in(spans[index][0], spans[index][1]) }}
        /* slice {{ index }} of {{ spans | length }} */
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- SQL: true for the events slice `index` of `spans` can hold (their event_at; none for an
    empty slice). -#}
{% macro in_slice_span(spans, index) -%}
    {%- if spans | length > 1 -%}
        event_at between {{ timestamp_literal(spans[index][2]) }}
                     and {{ timestamp_literal(spans[index][3]) }}
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- The slice count marked in compiled SQL (in_slice); 1 when it was not sliced. -#}
{% macro slices_of(compiled_sql) -%}
    {%- set mark = modules.re.search('/\* slice 0 of (\d+) \*/', compiled_sql or '') -%}
    {{ return(mark.group(1) | int if mark else 1) }}
{%- endmacro %}

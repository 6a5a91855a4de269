{#- Typed, renamed, de-duplicated events in the canonical taxonomy. No business logic:
    identity and sessions are decided downstream. Incremental by arrival: each run appends the
    event_ids it has not staged yet, whatever their event time, as its arrival_batch, so that
    its uniqueness test looks up the night's new ids only instead of grouping every id of the
    history. A run's number is one more than any the table has, a full rebuild's too (read
    before dbt replaces the table), so int_events_stitched can take the batches after the
    latest one it stitched. Once an erasure removed every event of the latest batch, its
    number is given again: stitching lost that batch's rows too, so it still reads the new
    one, but a model keeping a watermark of its own follows staged_at instead (when the run
    began; it also tells the next run which files it has looked at already). -#}
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='append',
          on_schema_change='append_new_columns') }}
{#- a table staged before arrival batches (staged_at) existed gets the column now; its rows
    keep null -#}
{%- set staged = adapter.get_relation(this.database, this.schema, this.identifier)
                 if execute else none %}
{%- set staged_columns = (adapter.get_columns_in_relation(staged) | map(attribute='name') | list)
                         if staged is not none else [] %}
{%- set arrival_batch = 1 %}
{%- if 'arrival_batch' in staged_columns %}
{%-   set latest = run_query('select coalesce(max(arrival_batch), 0) from ' ~ staged) %}
{%-   set arrival_batch = (latest.columns[0].values()[0] | int) + 1 %}
{%- endif %}
{#- The files this run reads: those loaded since the last run began (a file loaded again with
    --replace included) and any name no loaded file has (rows put in by hand); the others were
    all read then. Named here as constants, so that DuckDB reads only their rows of raw.events:
    matching every raw id of the history took half of a 100M-event night. -#}
{%- set unread_files = none %}
{%- if is_incremental() and 'staged_at' in staged_columns %}
{%-   set unread_files = run_query(
          'select distinct source_file from ' ~ source('raw', 'events')
          ~ ' where source_file not in (select file_name from ' ~ source('raw', 'load_manifest')
          ~ ' where loaded_at < (select max(staged_at) from ' ~ this ~ '))'
      ).columns[0].values() | list %}
{%- endif %}
{%- set in_unread_files -%}
    {%- if unread_files is not none %}
    where source_file in (
        {%- for file in unread_files %}'{{ file | replace("'", "''") }}', {% endfor %}null)
    {%- endif %}
{%- endset %}

with

-- Of the staged ids, only the unread files' are looked up (a semi join that hashes the few
-- new ids): an anti join against the staged table hashed all of its ids (1.3 s at 10M).
source as (
    select raw.* from {{ source('raw', 'events') }} as raw
    {% if is_incremental() %}
    {{ anti_join() }} (
        select event_id from {{ this }}
        where event_id in (
            select event_id from {{ source('raw', 'events') }} {{ in_unread_files }})
    ) as staged using (event_id)
    {{ in_unread_files }}
    {% endif %}
),

-- raw.events holds each event_id once (ingest drops repeats), so only the rare repeated ids
-- are ranked: a window over every wide row would sort the whole batch. A full build looks
-- them up in raw.events itself: DuckDB materializes a CTE that is read more than once, which
-- copied every wide row of the history (15 s of a 10M build); a night's new rows are few.
{%- set new_rows = 'source' if is_incremental() else source('raw', 'events') %}
repeats as (
    select source_file, source_line
    from {{ new_rows }}
    where event_id in (select event_id from {{ new_rows }} group by event_id having count(*) > 1)
    qualify row_number() over (
        partition by event_id order by event_at, source_file, source_line
    ) > 1
),

deduplicated as (
    select source.*
    from source
    {{ anti_join() }} repeats using (source_file, source_line)
),

with_properties as (
    select
        *,
        {{ json_texts('properties', {
            'scroll_percent': 'text', 'hover_ms': 'text', 'video_id': 'text',
            'position_s': 'text', 'duration_s': 'text', 'query': 'text', 'product_id': 'text',
            'price': 'text', 'quantity': 'text', 'revenue': 'text', 'currency': 'text',
            'purposes': {'personalization': 'text'}}) }} as props
    from deduplicated
),

renamed as (
    select
        event_id,
        event_type,
        event_at,
        received_at,
        anonymous_id,
        user_id,
        page_url,
        page_type,
        content_id,
        content_category,
        element_id,
        -- as sent (raw.events keeps it); here the schema's canonical value: ios -> mobile
        {{ canonical_value('device_type', 'device_type') }} as device_type,
        country,
        referrer,
        utm_source,
        utm_medium,
        utm_campaign,
        try_cast(props.scroll_percent as double) as scroll_percent,
        -- whole milliseconds: sums of integers are exact, whatever order DuckDB adds them in
        round(try_cast(props.hover_ms as double))::bigint as hover_ms,
        props.video_id as video_id,
        try_cast(props.position_s as double) as video_position_s,
        try_cast(props.duration_s as double) as video_duration_s,
        props.query as search_query,
        props.product_id as product_id,
        -- money as decimals: float sums of amounts depend on the order they are added in
        try_cast(props.price as decimal(18, 4)) as price,
        try_cast(props.quantity as double) as quantity,
        try_cast(props.revenue as decimal(18, 4)) as revenue,
        props.currency as currency,
        try_cast(props.purposes.personalization as boolean) as consents_to_personalization,
        properties,
        source_file,
        source_line,
        {{ arrival_batch }} as arrival_batch,
        cast({{ dbt.current_timestamp() }} as timestamp) as staged_at
    from with_properties
),

final as (
    select * from renamed
)

select * from final

{#- A usable identifier: trimmed, and not one of the placeholder values trackers send when
    they have no id (var identity_blocklist). -#}
{% macro usable_id(column) -%}
    case
        when lower(trim({{ column }})) not in (
            {%- for value in var('identity_blocklist') -%}
                '{{ value | replace("'", "''") }}'{{ ", " if not loop.last }}
            {%- endfor -%}
        ) then trim({{ column }})
    end
{%- endmacro %}

{#- The stable person id for a stitched identity key ('user:<id>' or 'anon:<id>'). -#}
{% macro person_id(identity_key) -%}
    'per_' || left(md5({{ identity_key }}), 24)
{%- endmacro %}

{#- CTE `users` (user_id, component_user_id): each user id of `ids` with the smallest user id
    it is connected to through devices (`edges`: anonymous_id, user_id). DuckDB walks the graph
    in a recursive CTE whose UNION drops repeated rows, so cycles end. Spark's recursive CTEs
    allow only UNION ALL, so there each user takes the smallest label among the users sharing
    a device with it, round after round (var identity_max_hops rounds reach users that many
    devices apart); a graph wider than that stops the build rather than split a person. -#}
{% macro user_components(ids, edges) -%}
    {{ return(adapter.dispatch('user_components')(ids, edges)) }}
{%- endmacro %}

{% macro default__user_components(ids, edges) -%}
user_labels (user_id, label) as (
    select distinct user_id, user_id from {{ ids }} where user_id is not null
    union
    select other.user_id, user_labels.label
    from user_labels
    join {{ edges }} as mine on mine.user_id = user_labels.user_id
    join {{ edges }} as other on other.anonymous_id = mine.anonymous_id
),

users as (
    select user_id, min(label) as component_user_id
    from user_labels
    group by all
),
{%- endmacro %}

{% macro spark__user_components(ids, edges) -%}
{%- set rounds = [var('identity_max_hops') | int, 1] | max -%}
labels_0 as (
    select distinct user_id, user_id as label from {{ ids }} where user_id is not null
),

neighbors as (
    -- each user with itself and every user sharing a device with it
    select user_id, user_id as neighbor_id from labels_0
    union
    select mine.user_id, other.user_id
    from {{ edges }} as mine
    join {{ edges }} as other on other.anonymous_id = mine.anonymous_id
),
{%- for round in range(1, rounds + 2) %}

labels_{{ round }} as (
    select neighbors.user_id, min(reached.label) as label
    from neighbors
    join labels_{{ round - 1 }} as reached on reached.user_id = neighbors.neighbor_id
    group by neighbors.user_id
),
{%- endfor %}

users as (
    -- one round more changed nothing: every label has reached all it can
    select
        user_id,
        case
            when label = (select label from labels_{{ rounds + 1 }} as after
                          where after.user_id = labels_{{ rounds }}.user_id)
                then label
            else raise_error('identity graph: users more than var identity_max_hops '
                             || '({{ rounds }}) devices apart are linked; raise it')
        end as component_user_id
    from labels_{{ rounds }}
),
{%- endmacro %}

{#- Rows of `events` with their person: by their own usable user id, else by their device's
    stitched identity (`identities`: int_identities_stitched). Rows whose only ids are
    placeholders belong to nobody we can tell apart and are left out. -#}
{% macro attributed_to_persons(events, identities) -%}
    select
        {{ events }}.*,
        coalesce(by_user.person_id, by_device.person_id) as person_id
    from {{ events }}
    left join {{ identities }} as by_user
        on by_user.id_type = 'user'
       and by_user.identifier = {{ usable_id(events ~ '.user_id') }}
    left join {{ identities }} as by_device
        on by_device.id_type = 'anonymous'
       and by_device.identifier = {{ usable_id(events ~ '.anonymous_id') }}
    where coalesce(by_user.person_id, by_device.person_id) is not null
{%- endmacro %}

{#- The tables that outlive rebuilds and name people: no model rebuilds their rows from events,
    so when a person merges into another (int_person_aliases) their rows move to the survivor
    here. `key`: what, besides the person, tells a row; `prefer`: which of the rows that now
    share a key stays (`moved`: the row came from a merged-away person, so false puts the
    survivor's own row first). A person keeps the first experiment arm they were assigned. -#}
{% macro person_keyed_tables() -%}
    {{ return([
        {'name': 'user_scores', 'key': ['model_name', 'as_of_date'], 'prefer': 'moved, score desc'},
        {'name': 'person_clusters', 'key': ['as_of_date'], 'prefer': 'moved, from_person_id'},
        {'name': 'user_recommendations', 'key': ['model_name', 'as_of_date', 'rank'],
         'prefer': 'moved, from_person_id'},
        {'name': 'segment_memberships', 'key': ['segment_name', 'as_of_date'],
         'prefer': 'moved, from_person_id'},
        {'name': 'trigger_firings', 'key': ['trigger_name', 'fired_at'],
         'prefer': 'moved, session_id'},
        {'name': 'trigger_suppressions', 'key': ['trigger_name', 'fired_at'],
         'prefer': 'moved, session_id'},
        {'name': 'activation_outbox', 'key': ['idempotency_key'], 'prefer': 'moved'},
        {'name': 'experiment_assignments', 'key': ['experiment'],
         'prefer': 'assigned_at, moved, from_person_id'},
        {'name': 'segment_exposures', 'key': ['experiment', 'as_of_date'],
         'prefer': 'moved, from_person_id'},
    ]) }}
{%- endmacro %}

{#- int_person_aliases' post-hook: in each person-keyed table of the marts schema that exists,
    the rows of merged-away people and of their survivors compete per key (see
    person_keyed_tables); the preferred row stays, under the survivor's id. Each move is logged
    in marts.person_merges. Only survivors that gain rows are touched, so a build without new
    merges changes nothing. -#}
{% macro follow_person_merges() -%}
    {%- if target.type == 'spark' -%}
    {#- the person-keyed tables are written by microseg's Python steps, which run on DuckDB -#}
    {%- do run_query("create database if not exists marts") -%}
    create table if not exists marts.person_merges (
        table_name string, former_person_id string, person_id string, rows_moved integer,
        rows_kept integer, moved_at timestamp
    ) using parquet
    {%- else -%}
    create schema if not exists marts;
    create table if not exists marts.person_merges (
        table_name string not null,
        former_person_id string not null,
        person_id string not null,
        rows_moved integer not null,  -- rows of the merged-away person
        rows_kept integer not null,   -- of those, the ones that won their key
        moved_at timestamp not null
    );
    {%- for table in person_keyed_tables() -%}
    {%- set relation = adapter.get_relation(this.database, 'marts', table['name']) -%}
    {%- if relation %}
    create or replace temp table person_merge_rows as
    with
    survivors as (
        select distinct aliases.person_id
        from {{ relation }} as kept
        join {{ this }} as aliases on kept.person_id = aliases.former_person_id
    ),
    competing as (
        select
            kept.*,
            kept.person_id as from_person_id,
            coalesce(aliases.person_id, kept.person_id) as to_person_id,
            aliases.person_id is not null as moved
        from {{ relation }} as kept
        left join {{ this }} as aliases on kept.person_id = aliases.former_person_id
        where coalesce(aliases.person_id, kept.person_id) in (select person_id from survivors)
    )
    select
        *,
        row_number() over (
            partition by to_person_id, {{ table['key'] | join(', ') }}
            order by {{ table['prefer'] }}
        ) = 1 as wins
    from competing;
    insert into marts.person_merges
    select '{{ table['name'] }}', from_person_id, to_person_id, count(*),
           count(*) filter (where wins), now()
    from person_merge_rows
    where moved
    group by all;
    {%- set profiles = adapter.get_relation(this.database, 'marts', 'cluster_profiles') %}
    {%- if table['name'] == 'person_clusters' and profiles %}
    -- a cluster loses the members whose rows lost to their survivor's row of that date
    update {{ profiles }} as profiles
    set members = profiles.members - lost.members
    from (
        select as_of_date, cluster_id, count(*) as members
        from person_merge_rows where not wins group by all
    ) as lost
    where lost.as_of_date = profiles.as_of_date and lost.cluster_id = profiles.cluster_id;
    {%- endif %}
    delete from {{ relation }}
    where person_id in (select from_person_id from person_merge_rows);
    insert into {{ relation }} by name
    select * exclude (from_person_id, to_person_id, moved, wins)
        replace (to_person_id as person_id)
    from person_merge_rows
    where wins;
    drop table person_merge_rows;
    {%- endif -%}
    {%- endfor %}
    {%- endif %}
{%- endmacro %}

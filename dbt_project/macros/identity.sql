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
    create schema if not exists marts;
    create table if not exists marts.person_merges (
        table_name varchar not null,
        former_person_id varchar not null,
        person_id varchar not null,
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
{%- endmacro %}

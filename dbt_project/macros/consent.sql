{#- Consent by purpose (marts.consent_ledger, marts.consent_periods; docs/privacy.md). -#}

{#- The configured purposes (var consent_purposes) as SQL rows (purpose, default_state). -#}
{% macro consent_purpose_rows() -%}
    select * from (values
    {%- for purpose, state in var('consent_purposes').items() %}
        ('{{ purpose | replace("'", "''") }}', '{{ state | replace("'", "''") }}')
        {{- "," if not loop.last }}
    {%- endfor %}
    ) as purposes (purpose, default_state)
{%- endmacro %}

{#- Whether `person` may be acted on for `purpose` as of `as_of` (a date means its midnight):
    the consent stated strictly before that moment (else the purpose's default) is granted,
    and it still is. "Still" makes a backfill of an old date leave out who has withdrawn since.
    One definition: dbt models render it here; everything else calls the warehouse macro
    marts.has_consent(person, purpose, as_of) that consent_periods creates from it. -#}
{% macro has_consent(person, purpose, as_of, periods) -%}
    {#- the periods' columns are renamed so that an unqualified argument such as person_id
        names the caller's column, not the subquery's -#}
    (exists (
        select 1
        from (
            select
                person_id as held_person_id,
                purpose as held_purpose,
                valid_from as held_from,
                valid_to as held_to
            from {{ periods }}
            where state = 'granted' and is_held_now
        ) as held
        where held.held_person_id = {{ person }}
          and held.held_purpose = {{ purpose }}
          and {{ in_force('held.held_from', 'held.held_to', as_of) }}
    ))
{%- endmacro %}

{#- Whether a consent period [valid_from, valid_to] is the one in force at `as_of` (a date
    means its midnight): statements count from strictly after the moment they were made. -#}
{% macro in_force(valid_from, valid_to, as_of) -%}
    (({{ valid_from }} is null or {{ valid_from }} < {{ as_of }}::timestamp)
     and ({{ valid_to }} is null or {{ valid_to }} >= {{ as_of }}::timestamp))
{%- endmacro %}

{#- consent_periods' post-hooks: the rules above as warehouse macros, for Python and analysts
    (DuckDB's: the steps that call them run on DuckDB) -#}
{% macro create_has_consent_macro() -%}
    {%- if target.type == 'spark' %}select 1{% else -%}
    create or replace macro {{ this.schema }}.has_consent(person, purpose_name, as_of) as
    {{ has_consent('person', 'purpose_name', 'as_of', this.schema ~ '.' ~ this.identifier) }}
    {%- endif %}
{%- endmacro %}

{% macro create_in_force_macro() -%}
    {%- if target.type == 'spark' %}select 1{% else -%}
    create or replace macro {{ this.schema }}.consent_in_force(valid_from, valid_to, as_of) as
    {{ in_force('valid_from', 'valid_to', 'as_of') }}
    {%- endif %}
{%- endmacro %}

{#- The purpose `use` (segments, scores, experiments, exports) acts under, as a SQL literal. -#}
{% macro consent_purpose_of(use) -%}
    '{{ var('consent_purpose_of')[use] | replace("'", "''") }}'
{%- endmacro %}

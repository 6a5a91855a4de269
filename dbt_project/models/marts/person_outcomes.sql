{#- What each person did in the h days from D (h: each sessions window of var feature_windows;
    purchased is null where purchases have no h-day window): the labels the person models learn
    (ml/specs: purchase_within, no_session_within). Read from fct_user_features_daily at D + h,
    whose h-day windows end exactly there. A view: a training reads one horizon (the other
    branches of the union are never computed). -#}
{{ config(materialized='view') }}

with

features as (
    select * from {{ ref('fct_user_features_daily') }}
),

final as (
    {%- set windows = var('feature_windows') %}
    {%- for h in windows.sessions %}
    select
        person_id,
        as_of_date - {{ h }} as as_of_date,
        {{ h }} as horizon_days,
        {% if h in windows.purchases %}cast(purchases_{{ h }}d > 0 as integer){% else %}cast(null as integer){% endif %}
            as purchased,
        cast(sessions_{{ h }}d = 0 as integer) as no_session
    from features
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
)

select * from final

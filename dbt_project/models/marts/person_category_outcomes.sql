{#- The content category each person spent the most engaged time on in the h days from D (h:
    each sessions window of var feature_windows; ties go to the first category by name): the label of the
    content preference model (ml/specs: top_category_within). People with features on D and
    engaged time in the window only. A view: a training reads one horizon. -#}
{{ config(materialized='view') }}

with

anchors as (
    select distinct person_id, as_of_date from {{ ref('fct_user_features_daily') }}
),

days as (
    select * from {{ ref('fct_person_category_daily') }}
),

windows as (
    {%- for h in var('feature_windows').sessions %}
    select anchors.person_id, anchors.as_of_date, {{ h }} as horizon_days,
           days.content_category, sum(days.engaged_s) as engaged_s
    from anchors
    join days
      on days.person_id = anchors.person_id
     and days.activity_date >= anchors.as_of_date
     and days.activity_date < anchors.as_of_date + {{ h }}
    group by anchors.person_id, anchors.as_of_date, days.content_category
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

ranked as (
    select
        *,
        row_number() over (
            partition by person_id, as_of_date, horizon_days
            order by engaged_s desc, content_category
        ) as rank_in_window
    from windows
),

final as (
    select person_id, as_of_date, horizon_days, content_category as top_category
    from ranked
    where rank_in_window = 1
)

select * from final

{#- Rows where the boolean SQL `expression` is false (nulls fail too). -#}
{% test expression_is_true(model, expression) %}
select *
from {{ model }}
where not coalesce(({{ expression }}), false)
{% endtest %}

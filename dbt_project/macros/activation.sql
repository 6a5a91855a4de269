{#- pre_hook of trigger_firings: a run replaces the firings of its own window. -#}
{% macro delete_trigger_window() -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where fired_at >= timestamp '{{ run_value("trigger_window_start") }}'
      and fired_at < timestamp '{{ run_value("trigger_cutoff") }}'
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

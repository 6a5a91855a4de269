"""The GA4 BigQuery export (a day's `events_YYYYMMDD` table, exported as newline-delimited JSON
or as Parquet) as canonical events: the mapping of docs/events.md, one SQL statement per file.

A GA4 row keeps its parameters as `event_params` key/value pairs, each value in the slot of the
type it was sent as (string, int or double: the same key can arrive in either); a parameter is
read from whichever slot holds it. BigQuery's JSON export writes INT64 values as strings and
leaves nulls out; other JSON dumps write numbers and nulls; both read the same. GA4 has no
event id: it is a hash of the fields Velir's dbt-ga4 package keys its events by, so a row
exported twice is a duplicate. Events GA4 records that are no behavior here (UNUSED_EVENTS:
session_start, view_item, ...) are counted in the file's manifest as unused, not loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from microseg.config import Settings
from microseg.ingest.formats import RAW_TEXT_CHARS, file_lines, is_parquet, parsed_json_lines_sql
from microseg.ingest.pages import content_id_sql, page_type_sql, url_path_sql
from microseg.ingest.sqltext import present_object_sql, quote

# GA4 event names -> canonical event types. Names neither here nor in UNUSED_EVENTS are
# snake-cased and checked like any event type (unknown ones are quarantined).
GA4_EVENTS = {
    "page_view": "page_view",
    "screen_view": "page_view",
    "user_engagement": "page_ping",  # carries the engaged time since the last such event
    "scroll": "scroll",
    "click": "click",
    "search": "search",
    "view_search_results": "search",
    "form_submit": "form_submit",
    "video_start": "video_play",
    "video_progress": "video_progress",
    "video_complete": "video_complete",
    "add_to_cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "begin_checkout": "checkout_start",
    "purchase": "purchase",
    "login": "identify",
    "sign_up": "identify",
}
# GA4's automatically collected and recommended events with no canonical behavior: counted as
# unused. The first three are GA4's bookkeeping (written beside the hit that starts a session
# or a visitor); a product page's own page_view is its product view (view_item).
UNUSED_EVENTS = (
    "session_start",
    "first_visit",
    "first_open",
    "view_item",
    "view_item_list",
    "select_item",
    "view_promotion",
    "select_promotion",
    "view_cart",
    "add_to_wishlist",
    "add_shipping_info",
    "add_payment_info",
    "refund",
    "file_download",
    "form_start",
    "generate_lead",
    "select_content",
    "share",
    "join_group",
    "tutorial_begin",
    "tutorial_complete",
    "earn_virtual_currency",
    "spend_virtual_currency",
    "ad_impression",
)
VALUE_SLOTS = ("string_value", "int_value", "double_value", "float_value")  # read in this order
GA4_MARKERS = (b'"event_name"', b'"event_timestamp"')  # every exported row has both
CONSENT_DENIED = "GA4 consent mode: analytics storage denied"


def is_ga4_line(line: bytes) -> bool:
    """A JSON line of the GA4 export names its event and its timestamp (canonical events and
    Segment messages have neither field)."""
    return all(marker in line for marker in GA4_MARKERS)


def is_ga4_columns(names: set[str]) -> bool:
    """A table (Parquet) with GA4's columns."""
    return {"event_name", "event_timestamp"} <= names


def _text_struct(*names: str) -> dict[str, str]:
    return dict.fromkeys(names, "VARCHAR")


KEY_VALUES = [{"key": "VARCHAR", "value": _text_struct(*VALUE_SLOTS)}]
# The fields of a GA4 row the mapping reads, all as text: each row's JSON is parsed once
# (json_transform), numbers written as strings or as numbers alike
ROW_TYPE = {
    **_text_struct(
        "event_name", "event_timestamp", "user_pseudo_id", "user_id", "stream_id",
        "batch_event_index",
    ),
    "event_params": KEY_VALUES,
    "user_properties": KEY_VALUES,
    "privacy_info": _text_struct("analytics_storage"),
    "device": _text_struct("category"),
    "geo": _text_struct("country"),
    "collected_traffic_source": _text_struct(
        "manual_source", "manual_medium", "manual_campaign_name"
    ),
    "ecommerce": _text_struct("purchase_revenue", "transaction_id"),
    "items": [_text_struct("item_id", "item_category", "price", "quantity")],
}  # fmt: skip


def _key_values_sql(field: str) -> str:
    """SQL: GA4's repeated key/value record `field` of row `g` as a list of struct(k, v), each
    value as text from whichever slot holds it."""
    slots = ", ".join(f"p.value.{slot}" for slot in VALUE_SLOTS)
    pair = f"struct_pack(k := p.key, v := coalesce({slots}))"
    return f"list_transform(coalesce(g.{field}, []), p -> {pair})"


def _ga4_doc_sql() -> str:
    """The canonical event of one GA4 row `g` (ROW_TYPE), with its parameters and user
    properties as `params` and `user_properties` (_key_values_sql)."""

    def param(key: str) -> str:
        return f"list_filter(params, p -> p.k = {quote(key)})[1].v"

    def number(expression: str) -> str:
        return f"try_cast({expression} as double)"

    def known(expression: str) -> str:
        """GA4 writes '(not set)' where it has no value."""
        return f"nullif(nullif({expression}, ''), '(not set)')"

    def campaign(field: str, key: str) -> str:
        """The event's own campaign field (newer exports), else its parameter (older ones)."""
        return known(f"coalesce(g.collected_traffic_source.{field}, {param(key)})")

    url = param("page_location")
    path = url_path_sql(url)
    page_type = page_type_sql(url, path)
    item = "g.items[1]"  # add_to_cart & co.: the first item's
    revenue = number("g.ecommerce.purchase_revenue")
    micros = "try_cast(g.event_timestamp as bigint)"
    at = f"strftime(try(make_timestamp({micros})), '%Y-%m-%dT%H:%M:%S.%fZ')"  # out of range: none
    event_type = (
        "case event_name "
        + " ".join(f"when {quote(k)} then {quote(v)}" for k, v in GA4_EVENTS.items())
        + " else regexp_replace(lower(trim(event_name)), '[^a-z0-9]+', '_', 'g') end"
    )
    # dbt-ga4's event key: stream, client, session, name, timestamp and the sorted parameters
    key_parts = [
        "g.stream_id",
        "g.user_pseudo_id",
        param("ga_session_id"),
        "event_name",
        "g.event_timestamp",
        "g.batch_event_index",
        "array_to_string(list_sort(list_transform(params, p -> p.k || '=' || coalesce(p.v, ''))),"
        " '&')",
    ]
    event_id = "md5(concat_ws('|', " + ", ".join(f"coalesce({p}, '')" for p in key_parts) + "))"
    properties = present_object_sql(
        {
            "client_session_id": param("ga_session_id"),
            "engagement_time_msec": number(param("engagement_time_msec")),
            "page_title": param("page_title"),
            "scroll_percent": "case when event_name = 'scroll' then "
            f"{number(param('percent_scrolled'))} end",
            "target_url": param("link_url"),
            "query": param("search_term"),
            "video_id": param("video_url"),
            "position_s": number(param("video_current_time")),
            "duration_s": number(param("video_duration")),
            "product_id": known(f"{item}.item_id"),
            "price": number(f"{item}.price"),
            "quantity": number(f"{item}.quantity"),
            "revenue": f"case when event_name = 'purchase' then coalesce({revenue}, "
            f"{number(param('value'))}) end",
            "currency": param("currency"),
            "order_id": known(f"coalesce(g.ecommerce.transaction_id, {param('transaction_id')})"),
            # the user's properties as an object (a key repeated: its first value; no key: left out)
            "user_properties": "case when len(user_properties) > 0 then map_from_entries("
            "list_filter(user_properties, (p, i) -> p.k is not null and list_position("
            "list_transform(user_properties, q -> q.k), p.k) = i)) end",
        }
    )
    return f"""json_object(
        'event_id', {event_id},
        'event_type', {event_type},
        'event_at', {at},
        'received_at', {at},
        'anonymous_id', g.user_pseudo_id,
        'user_id', g.user_id,
        'page_url', {url},
        'page_type', {page_type},
        'content_id', {content_id_sql(page_type, path)},
        'content_category', {known(f"{item}.item_category")},
        'element_id', coalesce({known(param("link_id"))}, {known(param("form_id"))}),
        'device_type', g.device.category,
        'country', {known("g.geo.country")},
        'referrer', {param("page_referrer")},
        'utm_source', {campaign("manual_source", "source")},
        'utm_medium', {campaign("manual_medium", "medium")},
        'utm_campaign', {campaign("manual_campaign_name", "campaign")},
        'properties', {properties}
    )"""


def _rows_sql(path: Path, settings: Settings, parquet: bool) -> str:
    """CTEs ending in `rows_(source_file, source_line, raw_text, j, pre_reason)`: the file's
    rows as JSON, from its Parquet columns or from its lines (registered as `_lines`)."""
    if parquet:
        reader = f"read_parquet({quote(str(path))}, file_row_number = true)"
        return f"""rows_ as (
            select {quote(path.name)} as source_file, file_row_number + 1 as source_line,
                   json_merge_patch(to_json(p), '{{"file_row_number": null}}') as j,
                   left(j::varchar, {RAW_TEXT_CHARS}) as raw_text, null::varchar as pre_reason
            from {reader} as p
        )"""
    return f"""{parsed_json_lines_sql(settings)},
        rows_ as (
            select source_file, source_line,
                   left(coalesce(text, cast(raw as varchar)), {RAW_TEXT_CHARS}) as raw_text,
                   case when pre_reason is null then text::json end as j, pre_reason
            from parsed
        )"""


def stage_ga4(con: duckdb.DuckDBPyConnection, path: Path, settings: Settings) -> None:
    """One file of the GA4 export into `_staged`; its unused events into `_unused`. A row sent
    while analytics storage was denied (consent mode: a cookieless ping, without
    user_pseudo_id) is quarantined with that reason, whatever its event."""
    unused = ", ".join(quote(name) for name in UNUSED_EVENTS)
    denied = "coalesce(lower(g.privacy_info.analytics_storage) = 'no', false)"
    parquet = is_parquet(path)
    if not parquet:
        con.register("_lines", file_lines(path))
    con.execute(
        f"""
        create or replace temp table _ga4 as
        with {_rows_sql(path, settings, parquet)},
        parsed_rows as (
            select *, json_transform(j, {quote(json.dumps(ROW_TYPE))}) as g from rows_
        ),
        named as (
            select *, g.event_name as event_name,
                   {_key_values_sql("event_params")} as params,
                   {_key_values_sql("user_properties")} as user_properties
            from parsed_rows
        )
        select source_file, source_line, raw_text, event_name,
               coalesce(pre_reason is null and not {denied} and event_name in ({unused}), false)
                   as unused,
               case when pre_reason is null then {_ga4_doc_sql()}::varchar end as doc,
               case when pre_reason is not null then pre_reason
                    when event_name is null then 'not a GA4 export row (no event_name)'
                    when {denied} then {quote(CONSENT_DENIED)}
               end as pre_reason
        from named
        """
    )
    if not parquet:
        con.unregister("_lines")
    con.execute(
        "insert into _staged select source_file, source_line, raw_text, doc, pre_reason "
        "from _ga4 where not unused"
    )
    con.execute(
        "insert into _unused select source_file, source_line, event_name from _ga4 where unused"
    )
    con.execute("drop table _ga4")

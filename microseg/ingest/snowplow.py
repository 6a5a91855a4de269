"""Snowplow enriched events (the 131 tab-separated fields Snowplow Enrich writes) as canonical
events: the mapping of docs/events.md, in one SQL statement per file.

Field order from the Snowplow analytics SDKs (snowplow-python-analytics-sdk
event_transformer.py, snowplow-golang-analytics-sdk mappings.go). Self-describing JSON
(`unstruct_event`, `contexts`, `derived_contexts`) is read with DuckDB's JSON functions:
the event's schema name picks the canonical event type, its entities give the page view, the
product, the transaction, the media player and the consent document.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from microseg.config import Settings
from microseg.errors import InputError
from microseg.ingest.formats import (
    RAW_TEXT_CHARS,
    Shape,
    decoded_lines_sql,
    file_lines,
    first_lines,
    is_parquet,
    stage_csv,
    stage_parquet,
)
from microseg.ingest.pages import content_id_sql, page_type_sql
from microseg.ingest.sqltext import ident, present_object_sql, quote

SNOWPLOW_FIELDS = (
    "app_id platform etl_tstamp collector_tstamp dvce_created_tstamp event event_id txn_id "
    "name_tracker v_tracker v_collector v_etl user_id user_ipaddress user_fingerprint "
    "domain_userid domain_sessionidx network_userid geo_country geo_region geo_city "
    "geo_zipcode geo_latitude geo_longitude geo_region_name ip_isp ip_organization ip_domain "
    "ip_netspeed page_url page_title page_referrer page_urlscheme page_urlhost page_urlport "
    "page_urlpath page_urlquery page_urlfragment refr_urlscheme refr_urlhost refr_urlport "
    "refr_urlpath refr_urlquery refr_urlfragment refr_medium refr_source refr_term mkt_medium "
    "mkt_source mkt_term mkt_content mkt_campaign contexts se_category se_action se_label "
    "se_property se_value unstruct_event tr_orderid tr_affiliation tr_total tr_tax "
    "tr_shipping tr_city tr_state tr_country ti_orderid ti_sku ti_name ti_category ti_price "
    "ti_quantity pp_xoffset_min pp_xoffset_max pp_yoffset_min pp_yoffset_max useragent "
    "br_name br_family br_version br_type br_renderengine br_lang br_features_pdf "
    "br_features_flash br_features_java br_features_director br_features_quicktime "
    "br_features_realplayer br_features_windowsmedia br_features_gears br_features_silverlight "
    "br_cookies br_colordepth br_viewwidth br_viewheight os_name os_family os_manufacturer "
    "os_timezone dvce_type dvce_ismobile dvce_screenwidth dvce_screenheight doc_charset "
    "doc_width doc_height tr_currency tr_total_base tr_tax_base tr_shipping_base ti_currency "
    "ti_price_base base_currency geo_timezone mkt_clickid mkt_network etl_tags "
    "dvce_sent_tstamp refr_domain_userid refr_device_tstamp derived_contexts domain_sessionid "
    "derived_tstamp event_vendor event_name event_format event_version event_fingerprint "
    "true_tstamp"
).split()
assert len(SNOWPLOW_FIELDS) == 131

# Self-describing events (by schema name) -> canonical event types. Others keep their name,
# snake-cased, and are checked like any event type (unknown ones are quarantined).
UNSTRUCT_EVENTS = {
    "link_click": "click",
    "submit_form": "form_submit",
    "site_search": "search",
    "add_to_cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "consent_granted": "consent",
    "consent_withdrawn": "consent",
    "play_event": "video_play",
    "pause_event": "video_pause",
    "percent_progress_event": "video_progress",
    "end_event": "video_complete",
}
# snowplow_ecommerce_action's `type`, and media_player_event's (media tracking v1)
ECOMMERCE_ACTIONS = {
    "add_to_cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "checkout_step": "checkout_start",
    "transaction": "purchase",
}
MEDIA_V1_TYPES = {
    "play": "video_play",
    "pause": "video_pause",
    "percentprogress": "video_progress",
    "ended": "video_complete",
}
JSON_FIELDS = ("contexts", "unstruct_event", "derived_contexts")  # self-describing JSON


def is_snowplow_line(line: bytes) -> bool:
    """An enriched event has exactly 131 tab-separated fields."""
    return line.count(b"\t") == len(SNOWPLOW_FIELDS) - 1


def _case(expression: str, mapping: dict[str, str], otherwise: str) -> str:
    whens = " ".join(f"when {quote(k)} then {quote(v)}" for k, v in mapping.items())
    return f"case {expression} {whens} else {otherwise} end"


def _snowplow_doc_sql() -> str:
    """The canonical event of one enriched line, split into list `f` (SQL, 1-based)."""

    def field(name: str) -> str:
        return f"nullif(f[{SNOWPLOW_FIELDS.index(name) + 1}], '')"

    def tstamp(name: str) -> str:
        return f"replace({field(name)}, ' ', 'T') || 'Z'"

    def entity(column: str, vendor_name: str) -> str:
        """The first entity of that schema among a contexts field's (its data object)."""
        return (
            f"list_filter(coalesce(json_extract({field(column)}, '$.data[*]'), []), "
            f"e -> (e->>'$.schema') like 'iglu:{vendor_name}/%')[1]->'$.data'"
        )

    ue = f"json_extract({field('unstruct_event')}, '$.data.data')"
    ue_name = (
        f"regexp_extract({field('unstruct_event')}->>'$.data.schema', '^iglu:[^/]+/([^/]+)/', 1)"
    )
    snake = "regexp_replace(lower(trim({})), '[^a-z0-9]+', '_', 'g')"
    unstruct_type = _case(
        ue_name,
        UNSTRUCT_EVENTS,
        _case(
            ue_name,
            {"snowplow_ecommerce_action": "ecommerce", "media_player_event": "media_v1"},
            snake.format(ue_name),
        ),
    )
    action = f"{ue}->>'$.type'"  # of an ecommerce action, or a v1 media player event
    event_type = f"""case {field("event")}
        when 'page_view' then 'page_view'
        when 'page_ping' then 'page_ping'
        when 'transaction' then 'purchase'
        when 'struct' then {snake.format(field("se_action"))}
        when 'unstruct' then case {unstruct_type}
            when 'ecommerce' then {_case(action, ECOMMERCE_ACTIONS, snake.format(action))}
            when 'media_v1' then {_case(f"lower({action})", MEDIA_V1_TYPES, snake.format(action))}
            else {unstruct_type} end
        else {field("event")} end"""
    product = entity("contexts", "com.snowplowanalytics.snowplow.ecommerce/product")
    transaction = entity("contexts", "com.snowplowanalytics.snowplow.ecommerce/transaction")
    player = (
        f"coalesce({entity('contexts', 'com.snowplowanalytics.snowplow.media/player')}, "
        f"{entity('contexts', 'com.snowplowanalytics.snowplow/media_player')})"
    )
    device = (
        f"coalesce({field('dvce_type')}, "
        f"{entity('derived_contexts', 'nl.basjes/yauaa_context')}->>'$.deviceClass')"
    )
    path = f"coalesce({field('page_urlpath')}, '')"
    page_type = page_type_sql(field("page_url"), path)
    scroll = f"""case when try_cast({field("doc_height")} as double) > 0 then least(100, round(
        100 * (coalesce(try_cast({field("pp_yoffset_max")} as double), 0)
               + coalesce(try_cast({field("br_viewheight")} as double), 0))
        / try_cast({field("doc_height")} as double))) end"""
    properties = {  # kept when not null
        "client_session_id": field("domain_sessionid"),
        "page_view_id": f"{entity('contexts', 'com.snowplowanalytics.snowplow/web_page')}->>'$.id'",
        "network_userid": field("network_userid"),
        "scroll_percent": f"case when {field('event')} = 'page_ping' then {scroll} end",
        "product_id": f"coalesce({ue}->>'$.sku', {product}->>'$.id')",
        "price": f"coalesce({ue}->'$.unitPrice', {product}->'$.price')",
        "quantity": f"coalesce({ue}->'$.quantity', {product}->'$.quantity')",
        "revenue": f"coalesce(try_cast({field('tr_total')} as double)::json, "
        f"{transaction}->'$.revenue')",
        "currency": f"coalesce({field('tr_currency')}, {ue}->>'$.currency', "
        f"{transaction}->>'$.currency', {product}->>'$.currency')",
        "order_id": f"coalesce({field('tr_orderid')}, {transaction}->>'$.transaction_id')",
        "target_url": f"{ue}->>'$.targetUrl'",
        "query": f"nullif(array_to_string(json_extract_string({ue}, '$.terms[*]'), ' '), '')",
        "position_s": f"{player}->'$.currentTime'",
        "duration_s": f"{player}->'$.duration'",
        "consent_action": f"case {ue_name} when 'consent_granted' then 'granted' "
        "when 'consent_withdrawn' then 'withdrawn' end",
        "all_purposes": f"case when {ue_name} = 'consent_granted' or ({ue_name} = "
        f"'consent_withdrawn' and coalesce(try_cast({ue}->>'$.all' as boolean), false)) "
        "then true end",
        "policy_version": f"{entity('contexts', 'com.snowplowanalytics.snowplow/consent_document')}"
        "->>'$.version'",
        **{name: field(name) for name in ("se_category", "se_label", "se_property", "se_value")},
    }
    return f"""json_object(
        'event_id', {field("event_id")},
        'event_type', {event_type},
        'event_at', coalesce({tstamp("derived_tstamp")}, {tstamp("dvce_created_tstamp")},
                             {tstamp("collector_tstamp")}),
        'received_at', {tstamp("collector_tstamp")},
        'anonymous_id', coalesce({field("domain_userid")}, {field("network_userid")}),
        'user_id', {field("user_id")},
        'page_url', {field("page_url")},
        'page_type', {page_type},
        'content_id', {content_id_sql(page_type, path)},
        'content_category', {product}->>'$.category',
        'element_id', {ue}->>'$.elementId',
        'device_type', {device},
        'country', {field("geo_country")},
        'referrer', {field("page_referrer")},
        'utm_source', {field("mkt_source")},
        'utm_medium', {field("mkt_medium")},
        'utm_campaign', {field("mkt_campaign")},
        'properties', {present_object_sql(properties)}
    )"""


def _invalid_json_sql(columns: dict[str, str]) -> str:
    """SQL: the names (comma-separated; '' for none) of the columns whose text is not empty
    and not valid JSON; `columns` maps each name to its SQL text."""
    checks = ", ".join(
        f"case when {text} <> '' and not json_valid({text}) then {quote(name)} end"
        for name, text in columns.items()
    )
    return f"concat_ws(', ', {checks})" if checks else "''"


# Why an event that reads as Snowplow's is still refused (given `not_json` and `f`)
CONTENT_REASONS = f"""
    when not_json <> '' then 'Snowplow ' || not_json || ': not valid JSON'
    when f[{SNOWPLOW_FIELDS.index("event") + 1}] = 'transaction_item' then
        'Snowplow transaction_item: its transaction is the purchase event'"""


def stage_snowplow(con: duckdb.DuckDBPyConnection, path: Path, settings: Settings) -> None:
    """One file of enriched events into `_staged`, as Enrich writes them (TSV) or as the
    warehouse loaders' atomic.events table exported as CSV or Parquet (atomic_shape)."""
    if is_parquet(path):
        stage_parquet(con, path, atomic_shape)
    elif is_atomic_header((first_lines(path, 1) or [b""])[0]):
        stage_csv(con, path, settings, atomic_shape)
    else:
        _stage_enriched_tsv(con, path, settings)


def _stage_enriched_tsv(con: duckdb.DuckDBPyConnection, path: Path, settings: Settings) -> None:
    """A line of another shape, with malformed self-describing JSON, or a transaction item
    (its transaction is the purchase event), is quarantined with its reason."""
    con.register("_lines", file_lines(path))
    not_json = _invalid_json_sql({c: f"parts[{SNOWPLOW_FIELDS.index(c) + 1}]" for c in JSON_FIELDS})
    con.execute(
        f"""
        insert into _staged
        with {decoded_lines_sql(settings)},
        split as (
            select *, string_split(text, chr(9)) as parts from decoded
        ),
        checked as (
            -- JSON functions raise on malformed text, so only well-formed lines are read
            select *, case when len(parts) = {len(SNOWPLOW_FIELDS)} then {not_json} end
                      as not_json
            from split
        ),
        readable as (
            select *, case when not_json = '' then parts end as f from checked
        )
        select
            source_file,
            source_line,
            left(coalesce(text, cast(raw as varchar)), {RAW_TEXT_CHARS}) as raw_text,
            case when f is not null then {_snowplow_doc_sql()}::varchar end as doc,
            case
                when line_reason is not null then line_reason
                when len(parts) <> {len(SNOWPLOW_FIELDS)} then format(
                    'Snowplow enriched event with {{}} tab-separated fields, not '
                    || {len(SNOWPLOW_FIELDS)}, len(parts))
                {CONTENT_REASONS}
            end as pre_reason
        from readable
        """
    )
    con.unregister("_lines")


# atomic.events as the Snowflake and Databricks loaders write it: the enriched fields as
# columns, each self-describing event or entity type in a column of its own named
# <kind>_<vendor and name with _ for . and />_<major version> (BigQuery's adds _<minor>_<patch>),
# holding the event's data object, or the array of the entities' data objects.
ATOMIC_MARKERS = ("event_id", "event", "collector_tstamp")
SELF_DESCRIBING_COLUMN = re.compile(
    r"^(unstruct_event|contexts|derived_contexts)_(.+?)_(\d+(?:_\d+_\d+)?)$"
)
# The names flatten ambiguously (snowplow_media_player_event: vendor ...snowplow.media or
# ...snowplow?), so the schemas the mapping reads are matched whole first.
KNOWN_SCHEMAS = (
    *(
        f"com.snowplowanalytics.snowplow/{name}"
        for name in (
            "web_page link_click submit_form site_search add_to_cart remove_from_cart "
            "consent_granted consent_withdrawn consent_document media_player_event media_player"
        ).split()
    ),
    *(
        f"com.snowplowanalytics.snowplow.media/{name}"
        for name in "player play_event pause_event percent_progress_event end_event".split()
    ),
    *(
        f"com.snowplowanalytics.snowplow.ecommerce/{name}"
        for name in "product transaction snowplow_ecommerce_action".split()
    ),
    "nl.basjes/yauaa_context",
)
CONTEXTS_SCHEMA = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0"
UNSTRUCT_SCHEMA = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0"


def is_atomic_columns(names: set[str]) -> bool:
    """Column names (lower case) of atomic.events."""
    return set(ATOMIC_MARKERS) <= names


def is_atomic_header(line: bytes) -> bool:
    """A CSV header naming atomic.events' columns (any case, quoted or not)."""
    text = line.decode("utf-8", "replace").lstrip("\ufeff")
    return is_atomic_columns({n.strip().strip('"').lower() for n in text.split(",")})


def schema_of_column(name: str) -> tuple[str, str] | None:
    """(kind, Iglu schema URI) of a loader's self-describing column, else None:
    contexts_com_snowplowanalytics_snowplow_web_page_1 -> (contexts,
    iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0)."""
    match = SELF_DESCRIBING_COLUMN.match(name.lower())
    if not match:
        return None
    kind, rest, version = match.groups()
    known = {schema.replace(".", "_").replace("/", "_"): schema for schema in KNOWN_SCHEMAS}
    vendor_name = known.get(rest, f"unknown/{rest}")
    return kind, f"iglu:{vendor_name}/jsonschema/{'-'.join([*version.split('_'), '0', '0'][:3])}"


def atomic_shape(path: Path, columns: list[str]) -> Shape:
    """atomic.events' columns as the enriched event's 131 fields (`f`): the self-describing
    columns folded back into the `contexts` and `unstruct_event` JSON the mapping reads (the
    loaders keep derived contexts among the contexts, so both read them)."""
    by_name = {c.lower(): c for c in columns}
    missing = [m for m in ATOMIC_MARKERS if m not in by_name]
    if missing:
        raise InputError(f"{path.name}: no column {', '.join(missing)} (Snowplow atomic.events)")
    described = {c: schema_of_column(c) for c in columns}
    json_columns = {c: ident(c) for c, d in described.items() if d} | {
        by_name[n]: ident(by_name[n]) for n in JSON_FIELDS if n in by_name
    }
    contexts = [
        f"coalesce(list_transform(json_extract(nullif({ident(c)}, ''), '$[*]'), "
        f"d -> json_object('schema', {quote(uri)}, 'data', d)), [])"
        for c, d in described.items()
        if d and d[0] != "unstruct_event"
        for uri in [d[1]]
    ]
    unstruct = [  # the event's own column: the one that holds a value
        f"case when {ident(c)} <> '' then json_object('schema', {quote(UNSTRUCT_SCHEMA)}, "
        f"'data', json_object('schema', {quote(d[1])}, 'data', json({ident(c)}))) end"
        for c, d in described.items()
        if d and d[0] == "unstruct_event"
    ]
    folded = {
        "contexts": f"json_object('schema', {quote(CONTEXTS_SCHEMA)}, 'data', "
        f"flatten([{', '.join(contexts)}]))::varchar"
        if contexts
        else "''",
        "unstruct_event": f"coalesce({', '.join(unstruct)})::varchar" if unstruct else "''",
    }
    folded["derived_contexts"] = folded["contexts"]

    def field(name: str) -> str:
        if name in by_name:
            text = f"coalesce({ident(by_name[name])}, '')"
            if name.endswith("tstamp"):  # as Enrich writes them: UTC without an offset
                return f"regexp_replace({text}, '(Z|[+]00(:?00)?)$', '')"
            return text
        return folded.get(name, "''")

    not_json = _invalid_json_sql(json_columns)
    fields = ", ".join(field(name) for name in SNOWPLOW_FIELDS)
    return Shape(
        columns=columns,
        prepared=f"{not_json} as not_json, case when {not_json} = '' then [{fields}] end as f",
        doc=f"case when f is not null then {_snowplow_doc_sql()}::varchar end",
        pre_reason=f"case {CONTENT_REASONS} end",
    )

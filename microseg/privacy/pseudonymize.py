"""Personal data minimized at the door: what ingest changes before anything is stored.

Always: IP addresses (MICROSEG_IP_FIELDS, default properties.ip) are truncated to their /24
(IPv4) or /48 (IPv6) network, the query parameters named in MICROSEG_SCRUB_QUERY_PARAMS
(email, token, ...) are removed from page_url and referrer, and quarantined raw lines have
every email address and IPv4 address replaced by [email] / [ip].

With MICROSEG_PSEUDONYMIZE (a list of fields, e.g. `properties.email,user_id`): each value of
those fields becomes a pseudonym, `ps<key id>_<32 hex>` (HMAC-SHA256 with the privacy key),
the same for the same value, so joins and identity stitching still work; user ids that are
email addresses are pseudonymized even when user_id is not listed. The key id prefix names
the key that made a pseudonym (rotation: docs/privacy.md).
"""

from __future__ import annotations

import re

import duckdb
import pandas as pd

from microseg.config import Settings
from microseg.ingest.sqltext import quote
from microseg.privacy.keys import key_id, keyed_hash, privacy_key

EMAIL_RE = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
IPV4_RE = r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b"
PSEUDONYM_RE = r"^ps[0-9a-f]{8}_[0-9a-f]{32}$"


def pseudonym(key: bytes, value: str) -> str:
    """The stored form of a personal value: keyed, stable, with the key's id."""
    return f"ps{key_id(key)}_{keyed_hash(key, 'pseudonym', value)[:32]}"


def stored_user_id(settings: Settings, user_id: str) -> str:
    """A user id as ingest stores it (erasure looks people up by what is stored)."""
    if settings.pseudonymized_fields and (
        "user_id" in settings.pseudonymized_fields or _is_email(user_id)
    ):
        return pseudonym(privacy_key(settings), user_id)
    return user_id


def _is_email(value: str) -> bool:
    return re.fullmatch(EMAIL_RE, value) is not None


def _property(field: str) -> str | None:
    return field.split(".", 1)[1] if field.startswith("properties.") else None


def _value_sql(field: str) -> str:
    key = _property(field)
    return f"(properties ->> {quote('$.' + key)})" if key else field


def _set_sql(field: str, value: str) -> str:
    """SQL assigning `value` to a top-level column or a key of properties."""
    key = _property(field)
    if key is None:
        return f"{field} = {value}"
    return f"properties = json_merge_patch(properties, json_object({quote(key)}, {value}))"


def truncated_ip_sql(value: str) -> str:
    """/24 of an IPv4 address, /48 of an IPv6 one (the first three groups), else null."""
    return f"""case
        when regexp_full_match({value}, '{IPV4_RE}')
            then regexp_replace({value}, '\\.\\d{{1,3}}$', '.0')
        when contains({value}, ':')
            then rtrim(array_to_string(string_split({value}, ':')[1:3], ':'), ':') || '::'
        end"""


def scrubbed_url_sql(column: str, params: tuple[str, ...]) -> str:
    """`column` without the named query parameters (and a dangling ? or &)."""
    if not params:
        return column
    names = "|".join(re.escape(p) for p in params).replace("'", "''")
    removed = f"regexp_replace({column}, '[?&]({names})=[^&#]*', '', 'gi')"
    return f"regexp_replace({removed}, '^([^?#]*)&', '\\1?')"  # the first one left opens


def protect_staged_rows(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Rewrite the staged rows (`_checked`) in place before they are stored (module doc)."""
    for field in settings.ip_fields:
        value = _value_sql(field)
        con.execute(
            f"update _checked set {_set_sql(field, truncated_ip_sql(value))} "
            f"where {value} is not null"
        )
    for column in ("page_url", "referrer"):
        scrubbed = scrubbed_url_sql(column, settings.scrub_query_params)
        con.execute(f"update _checked set {column} = {scrubbed} where {column} like '%?%'")
    con.execute(
        f"""update _checked set raw_text = regexp_replace(
                regexp_replace(raw_text, '{EMAIL_RE}', '[email]', 'g'), '{IPV4_RE}', '[ip]', 'g')
            where raw_text is not null and reason is not null"""
    )
    if not settings.pseudonymized_fields:
        return
    key = privacy_key(settings)
    fields = list(settings.pseudonymized_fields)
    if "user_id" not in fields:
        fields.append("user_id")  # only its email values, below
    for field in fields:
        value = _value_sql(field)
        only_emails = (
            f"and regexp_full_match({value}, '{EMAIL_RE}')"
            if field not in settings.pseudonymized_fields
            else ""
        )
        pending = f"{value} is not null and not regexp_full_match({value}, '{PSEUDONYM_RE}')"
        values = [
            v
            for (v,) in con.execute(
                f"select distinct {value} from _checked where {pending} {only_emails}"
            ).fetchall()
        ]
        if not values:
            continue
        con.register(
            "_pseudonyms",
            pd.DataFrame(
                {"value": values, "pseudonym": [pseudonym(key, v) for v in values]}, dtype=object
            ),
        )
        con.execute(
            f"""update _checked set {_set_sql(field, "_pseudonyms.pseudonym")}
                from _pseudonyms where {value} = _pseudonyms.value"""
        )
        con.unregister("_pseudonyms")

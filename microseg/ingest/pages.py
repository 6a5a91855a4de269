"""What a page is, from its URL path, for sources that send no page type (Snowplow, GA4): one
rule, so both adapters type the same URL the same way (docs/events.md)."""

from __future__ import annotations

from microseg.ingest.sqltext import quote

PAGE_TYPES_IN_PATH = ("article", "product", "category", "checkout", "search", "video")
CONTENT_PAGE_TYPES = ("article", "product", "video")


def url_path_sql(url: str) -> str:
    """SQL: the path of a URL (`https://host/a/b?q#f` -> `/a/b`; '' when it has none)."""
    return f"coalesce(regexp_extract({url}, '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^?#]*)', 1), '')"


def page_type_sql(url: str, path: str) -> str:
    """SQL: `/` is home; a first path segment among PAGE_TYPES_IN_PATH is that; else other
    (null without a URL)."""
    first_segment = f"split_part({path}, '/', 2)"
    return f"""case when {url} is null then null
        when {path} in ('', '/') then 'home'
        when {first_segment} in ({", ".join(quote(t) for t in PAGE_TYPES_IN_PATH)})
            then {first_segment}
        else 'other' end"""


def content_id_sql(page_type: str, path: str) -> str:
    """SQL: an article's, product's or video's page is its content: its path."""
    types = ", ".join(quote(t) for t in CONTENT_PAGE_TYPES)
    return f"case when ({page_type}) in ({types}) then {path} end"

"""SQL text helpers: literals, identifiers, values shown inside reasons."""

from __future__ import annotations


def quote(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def sql_shown(expr: str) -> str:
    """SQL that shows a value inside a reason: quoted, cut at 60 characters, or null."""
    return f"coalesce('''' || left({expr}, 60) || '''', 'null')"


def present_object_sql(values: dict[str, str]) -> str:
    """SQL: a JSON object of the values (SQL expressions) that are not null."""
    pairs = ", ".join(f"struct_pack(k := {quote(k)}, v := to_json({v}))" for k, v in values.items())
    return f"to_json(map_from_entries(list_filter([{pairs}], p -> p.v is not null)))"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300]

"""SQL text helpers: literals, identifiers, values shown inside reasons."""

from __future__ import annotations


def quote(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def sql_shown(expr: str) -> str:
    """SQL that shows a value inside a reason: quoted, cut at 60 characters, or null."""
    return f"coalesce('''' || left({expr}, 60) || '''', 'null')"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300]

"""The canonical event contract, read from schemas/event.schema.json.

The ingestion derives its columns, types, required fields, taxonomies and ranges from the
schema file, so the documented contract and the enforced one cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_RESOURCE = "event.schema.json"
# The file formats ingest reads (docs/events.md): canonical events as JSON Lines, CSV or
# Parquet (JSON Lines may also hold Segment/RudderStack messages), Snowplow's enriched TSV and
# the GA4 BigQuery export (newline-delimited JSON or Parquet).
INPUT_FORMATS = ("jsonl", "csv", "parquet", "snowplow", "ga4")


@dataclass(frozen=True)
class Taxonomy:
    """A field accepted as sent and mapped to canonical values downstream (`x-taxonomy`):
    aliases to their value, anything else to the fallback. A real site sends `ios` or
    `smart_tv` for a device type; that must not stop a night."""

    values: tuple[str, ...]
    fallback: str
    aliases: dict[str, str]


@dataclass(frozen=True)
class Field:
    """One top-level event field as the warehouse stores it."""

    name: str
    sql_type: str  # DuckDB type of the column in raw.events
    is_timestamp: bool
    enum: tuple[str, ...] | None  # enforced at ingestion: other values are quarantined
    max_length: int | None
    taxonomy: Taxonomy | None = None


@dataclass(frozen=True)
class NumericProperty:
    """A numeric key inside `properties`, with its allowed range."""

    name: str
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True)
class EventContract:
    fields: tuple[Field, ...]
    required: tuple[str, ...]
    identity_any_of: tuple[str, ...]
    numeric_properties: tuple[NumericProperty, ...]
    string_properties: tuple[str, ...]
    object_properties: tuple[str, ...]

    @property
    def column_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    @property
    def column_definitions(self) -> list[str]:
        """`name TYPE` of each field as raw.events stores it (the table's DDL)."""
        return [f"{f.name} {f.sql_type}" for f in self.fields]

    @property
    def read_types(self) -> dict[str, str]:
        """Each field as ingest reads it before checking: text, and `properties` as JSON."""
        return {f.name: "JSON" if f.name == "properties" else "VARCHAR" for f in self.fields}

    @property
    def read_struct_type(self) -> str:
        """SQL: a row's fields as read (read_types), STRUCT(event_id VARCHAR, ...)."""
        return f"STRUCT({', '.join(f'{name} {kind}' for name, kind in self.read_types.items())})"

    def taxonomy_rows(self) -> list[tuple[str, str | None, str]]:
        """(field, received value, canonical value) for every field with a closed set of
        values: enums map to themselves, taxonomies add their aliases and a fallback row
        (received value null: anything else). dbt reads them as raw.event_taxonomy, so its
        mapping and its tests take the values from this schema, not from a copy."""
        rows: list[tuple[str, str | None, str]] = []
        for f in self.fields:
            if f.enum:
                rows += [(f.name, value, value) for value in f.enum]
            if f.taxonomy:
                rows += [(f.name, value, value) for value in f.taxonomy.values]
                rows += [(f.name, alias, value) for alias, value in f.taxonomy.aliases.items()]
                rows.append((f.name, None, f.taxonomy.fallback))
        return rows

    @property
    def event_types(self) -> tuple[str, ...]:
        enum = self.field("event_type").enum
        assert enum is not None
        return enum


@cache
def load_schema() -> dict[str, Any]:
    """The JSON Schema document itself (also used by tests with `jsonschema`)."""
    text = resources.files("microseg.schemas").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    return json.loads(text)


def _types(spec: dict[str, Any]) -> set[str]:
    kind = spec.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def _taxonomy(name: str, spec: dict[str, Any]) -> Taxonomy:
    values = tuple(spec["values"])
    aliases = {alias.strip().lower(): value for alias, value in spec.get("aliases", {}).items()}
    stray = sorted({spec["fallback"], *aliases.values()} - set(values))
    if stray:  # a broken schema is a bug in this repository, not bad input
        raise ValueError(f"x-taxonomy of {name}: {stray} not among its values {values}")
    return Taxonomy(values, spec["fallback"], aliases)


@cache
def event_contract() -> EventContract:
    """Compile the schema into the structures the ingestion checks against."""
    schema = load_schema()
    fields = []
    for name, spec in schema["properties"].items():
        kinds = _types(spec)
        is_ts = spec.get("format") == "date-time"
        if "object" in kinds:
            sql_type = "JSON"
        elif is_ts:
            sql_type = "TIMESTAMP"
        else:
            sql_type = "VARCHAR"
        enum = spec.get("enum")
        taxonomy = spec.get("x-taxonomy")
        fields.append(
            Field(
                name=name,
                sql_type=sql_type,
                is_timestamp=is_ts,
                enum=tuple(v for v in enum if v is not None) if enum else None,
                max_length=spec.get("maxLength"),
                taxonomy=_taxonomy(name, taxonomy) if taxonomy else None,
            )
        )
    props = schema["properties"]["properties"]["properties"]
    numeric = tuple(
        NumericProperty(name, spec.get("minimum"), spec.get("maximum"))
        for name, spec in props.items()
        if "number" in _types(spec)
    )
    strings = tuple(name for name, spec in props.items() if _types(spec) == {"string"})
    objects = tuple(name for name, spec in props.items() if _types(spec) == {"object"})
    any_of = tuple(alt["required"][0] for alt in schema.get("anyOf", []))
    return EventContract(
        fields=tuple(fields),
        required=tuple(schema["required"]),
        identity_any_of=any_of,
        numeric_properties=numeric,
        string_properties=strings,
        object_properties=objects,
    )

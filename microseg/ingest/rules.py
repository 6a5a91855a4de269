"""Stage 2: type the canonical fields and give each row its first contract violation, with the
rules compiled from the event JSON Schema (microseg.contract)."""

from __future__ import annotations

import json

from microseg.contract import EventContract
from microseg.ingest.formats import RAW_TEXT_CHARS
from microseg.ingest.sqltext import quote, sql_shown


def _trimmed(value: str) -> str:
    """SQL: the text without surrounding spaces, null when empty. DuckDB's trim reads every
    character (it took a third of the whole check), so only values that open or end with a
    space are trimmed."""
    spaced = f"starts_with({value}, ' ') or ends_with({value}, ' ')"
    return f"nullif(case when {spaced} then trim({value}) else {value} end, '')"


def checked_sql(contract: EventContract) -> str:
    """Typed canonical columns plus `reason`, the first contract rule each row breaks.

    Each row's fields are read once: a table-shaped file stages them as read already
    (`_staged_fields`), a document is parsed once into the same struct (contract.read_types).
    Each value is trimmed or cast once (the CTE `v`: text_*, time_*, number_*), not once per
    rule. A time is kept as the UTC timestamp it names (null when it names none, or an
    infinite one).
    """
    top = contract.read_types
    props = {p.name: "VARCHAR" for p in contract.numeric_properties}
    props |= {name: "JSON" for name in contract.object_properties}
    texts = [f.name for f in contract.fields if f.name != "properties"]
    times = [f.name for f in contract.fields if f.is_timestamp]

    values = [f"{_trimmed('f.' + name)} as text_{name}" for name in texts]
    # epoch_us reads the instant as it is stored; `at time zone` costs a time zone lookup
    values += [
        f"make_timestamp(epoch_us(try_cast(f.{name} as timestamptz))) as time_{name}"
        for name in times
    ]
    values += [
        f"try_cast(p.{p.name} as double) as number_{p.name}" for p in contract.numeric_properties
    ]

    select = []
    for f in contract.fields:
        if f.name == "properties":
            select.append("case when is_object then f.properties end as properties")
        elif f.is_timestamp:
            select.append(f"time_{f.name} as {f.name}")
        else:
            select.append(f"text_{f.name} as {f.name}")

    rules: list[tuple[str, str]] = [("pre_reason is not null", "pre_reason")]
    rules += [(f"text_{name} is null", quote(f"missing {name}")) for name in contract.required]
    ids = contract.identity_any_of
    rules.append(
        (
            " and ".join(f"text_{n} is null" for n in ids),
            quote(f"missing both {' and '.join(ids)}"),
        )
    )
    for f in contract.fields:
        value = f"f.{f.name}"
        if f.max_length:  # bytes bound characters: count characters only past that many bytes
            rules.append(
                (
                    f"strlen({value}) > {f.max_length} and length({value}) > {f.max_length}",
                    quote(f"{f.name} longer than {f.max_length} characters"),
                )
            )
        if f.enum:
            allowed = ", ".join(quote(v) for v in f.enum)
            rules.append(
                (
                    f"text_{f.name} not in ({allowed})",
                    f"'unknown {f.name} ' || {sql_shown(value)}",
                )
            )
        if f.is_timestamp:
            rules.append(
                (
                    f"text_{f.name} is not null and time_{f.name} is null",
                    f"'{f.name} is not an ISO-8601 timestamp: ' || {sql_shown(value)}",
                )
            )
    rules.append(
        (
            "f.properties is not null and json_type(f.properties) <> 'NULL' and not is_object",
            "'properties is not a JSON object'",
        )
    )
    for prop in contract.numeric_properties:
        value, number = f"p.{prop.name}", f"number_{prop.name}"
        rules.append(
            (
                f"{value} is not null and {number} is null",
                f"'properties.{prop.name} is not a number: ' || {sql_shown(value)}",
            )
        )
        bounds = []
        if prop.minimum is not None:
            bounds.append(f"{number} < {prop.minimum}")
        if prop.maximum is not None:
            bounds.append(f"{number} > {prop.maximum}")
        if bounds:
            low = "" if prop.minimum is None else f"{prop.minimum:g}"
            high = "" if prop.maximum is None else f"{prop.maximum:g}"
            rules.append(
                (
                    " or ".join(bounds),
                    f"'properties.{prop.name}=' || {value} || ' is outside {low}..{high}'",
                )
            )
    for name in contract.object_properties:
        rules.append(
            (
                f"coalesce(json_type(p.{name}), 'NULL') not in ('OBJECT', 'NULL')",
                quote(f"properties.{name} is not a JSON object"),
            )
        )

    reason = "case " + " ".join(f"when {cond} then {msg}" for cond, msg in rules) + " end"

    def checks(rows: str) -> str:
        """The checks over `rows` (source_file, source_line, raw_text, doc, pre_reason, f)."""
        return f"""
        with parsed as ({rows}),
        typed as (
            select *, coalesce(json_type(f.properties) = 'OBJECT', false) as is_object
            from parsed
        ),
        with_properties as (
            select *, json_transform(case when is_object then f.properties end,
                                     {quote(json.dumps(props))}) as p
            from typed
        ),
        v as (select *, {", ".join(values)} from with_properties)
        select * exclude (raw_text, doc),
               -- only a quarantined row keeps its input; a canonical event's is its document
               case when reason is not null
                    then coalesce(raw_text, left(doc, {RAW_TEXT_CHARS})) end as raw_text
        from (
            select source_file, source_line, raw_text, doc, {", ".join(select)},
                   {reason} as reason
            from v
        )"""

    # one statement per staging table: a union of both held a batch in memory
    documents = f"""select source_file, source_line, raw_text, doc, pre_reason,
                   json_transform(doc, {quote(json.dumps(top))}) as f
            from _staged"""
    fields_read = """select source_file, source_line, raw_text, null as doc, pre_reason, fields as f
            from _staged_fields"""
    # a quarantined row read as fields shows them (carried through the checks, they took
    # more memory than a batch may: only the few such rows are looked up again)
    return f"""create or replace temp table _checked as {checks(documents)};
        insert into _checked {checks(fields_read)};
        update _checked set raw_text = left(to_json(s.fields)::varchar, {RAW_TEXT_CHARS})
        from _staged_fields as s
        where _checked.reason is not null and _checked.raw_text is null
          and s.source_file = _checked.source_file and s.source_line = _checked.source_line"""

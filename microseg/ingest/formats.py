"""Stage 1: read files into `_staged(source_file, source_line, raw_text, doc, pre_reason)`:
JSON Lines (canonical events, or Segment/RudderStack messages mapped here), CSV and Parquet
(those of canonical columns into `_staged_fields`: their fields as read, not a document).

JSON Lines files are read one by one (jsonl_chunks: what makes a file unreadable is found here)
and parsed together (stage_jsonl), so that DuckDB spreads the parsing over its threads."""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from isal import igzip  # a day's dump in 0.4 s, 0.9 s with the standard library's gzip
from isal.igzip_lib import IsalError

from microseg.config import Settings
from microseg.contract import EventContract, event_contract
from microseg.errors import InputError
from microseg.ingest.sqltext import first_line, ident, quote, sql_shown

RAW_TEXT_CHARS = 2000  # quarantined rows keep this much of the offending input

# Segment / RudderStack `track` event names mapped to the canonical taxonomy (docs/events.md).
# Names not listed are snake-cased ("Page Ping" -> page_ping) and then checked like any event.
SPEC_TRACK_EVENTS = {
    "Products Searched": "search",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Checkout Started": "checkout_start",
    "Order Completed": "purchase",
    "Video Playback Started": "video_play",
    "Video Playback Resumed": "video_play",
    "Video Playback Paused": "video_pause",
    "Video Content Playing": "video_progress",
    "Video Playback Completed": "video_complete",
    "Form Submitted": "form_submit",
    "Consent Updated": "consent",
    "Segment Consent Preference Updated": "consent",
}
SPEC_MESSAGE_TYPES = {"track", "page", "screen", "identify"}
# Spec properties that become canonical columns, so they are not kept twice in `properties`.
SPEC_LIFTED_PROPERTIES = (
    "page_type",
    "content_id",
    "content_category",
    "category",
    "element_id",
    "url",
    "referrer",
)


@contextlib.contextmanager
def _gzip_errors(path: Path) -> Iterator[None]:
    """Corrupt or truncated gzip is the file's error."""
    try:
        yield
    except EOFError:
        raise InputError(f"{path.name}: {_early_end(path)}") from None
    except (gzip.BadGzipFile, zlib.error, IsalError) as exc:
        raise InputError(f"{path.name}: corrupt gzip ({exc})") from None


def _early_end(path: Path) -> str:
    """Why a gzip file ended early for ISA-L, which says so of bytes after the last stream too:
    Python's own gzip, run only on such a file, tells a cut file from one with junk appended."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass
    except (gzip.BadGzipFile, zlib.error) as exc:
        return f"corrupt gzip ({exc})"
    except EOFError:
        pass
    return "truncated gzip (ends before the end-of-stream marker)"


def _read_bytes(path: Path) -> bytes:
    """Whole file, decompressed when gzipped."""
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    with _gzip_errors(path):
        return igzip.decompress(data)


def text_bytes(path: Path) -> int:
    """About how many bytes the file holds decompressed, without decompressing it: a gzip
    file's trailer says (modulo 4 GiB, so never less than its size on disk)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size < 18 or handle.read(2) != b"\x1f\x8b":
            return size
        handle.seek(-4, 2)
        return max(size, int.from_bytes(handle.read(4), "little"))


def content_bytes(path: Path, fmt: str) -> int:
    """About how many bytes of values a file holds once read: a Parquet file's uncompressed
    row groups (its footer says), any other file's text (text_bytes)."""
    if fmt != "parquet":
        return text_bytes(path)
    metadata = pq.read_metadata(path)
    return sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))


def first_lines(path: Path, lines: int = 20, limit: int = 1 << 20) -> list[bytes]:
    """The file's first non-empty lines (decompressed), each at most `limit` bytes; none if
    unreadable (the reader then says why)."""
    head = []
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with igzip.open(path, "rb") if gzipped else path.open("rb") as handle:
            while len(head) < lines and (line := handle.readline(limit)):
                if line.strip():
                    head.append(line)
    except (OSError, EOFError, zlib.error, IsalError):
        pass
    return head


def parquet_columns(path: Path) -> set[str]:
    """A Parquet file's column names (lower case); none when its schema cannot be read (the
    Parquet reader then says why)."""
    try:
        return {name.lower() for name in pq.read_schema(path).names}
    except (OSError, ValueError):
        return set()


def is_parquet(path: Path) -> bool:
    """Parquet by its magic bytes, whatever the file's name."""
    with path.open("rb") as handle:
        return handle.read(4) == b"PAR1"


def _line_table(data: bytes | memoryview, first_line: int = 1) -> pa.Table:
    """Split bytes into lines without a Python loop: (source_line, nbytes, raw, text, blank).

    `raw` and `text` are each line without its terminator (LF or CR LF), as views into `data`
    (_line_views: no line is copied, and no SQL has to trim lines); `nbytes` counts the
    terminator as delivered. `text` is the line as UTF-8, or null for a line that is not: a
    file that is valid UTF-8 as a whole (the usual case, checked in one pass) is viewed as text
    without decoding lines. `blank`: nothing but spaces.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
    ends = np.append(starts[1:], len(buf)).astype(np.int64)
    if len(buf) and buf[-1] == 10:  # the final terminator does not open another line
        starts, ends = starts[:-1], ends[:-1]
    crlf = np.zeros(len(newlines), dtype=bool)
    if len(newlines):
        crlf[newlines > 0] = buf[newlines[newlines > 0] - 1] == 13
    terminator = np.zeros(len(starts), dtype=np.int64)
    terminator[: len(newlines)] = 1 + crlf  # the last line may have none
    lengths = ends - starts - terminator
    raw = _line_views(data, starts, lengths)
    text = raw.view(pa.string_view())
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:  # some line is not UTF-8: find which, line by line
        text = pa.array([_utf8_or_none(line) for line in raw.to_pylist()], pa.string_view())
    # a line can only be blank if it is empty or opens with a space: check just those
    opens_with_space = np.zeros(len(starts), dtype=bool)
    opens_with_space[lengths > 0] = buf[starts[lengths > 0]] == 32
    maybe_blank = np.flatnonzero((lengths == 0) | opens_with_space)
    blank = np.zeros(len(starts), dtype=bool)
    for line in maybe_blank:
        blank[line] = not bytes(data[starts[line] : starts[line] + lengths[line]]).strip(b" ")
    return pa.table(
        {
            "source_line": pa.array(
                np.arange(first_line, first_line + len(starts), dtype=np.int64)
            ),
            "nbytes": pa.array(ends - starts),
            "raw": raw,
            "text": text,
            "blank": pa.array(blank),
        }
    )


VIEW_INLINE_BYTES = 12  # Arrow's view layout: shorter values sit in the view itself
VIEW_BUFFER_BYTES = 1 << 30  # a view's offset is 32 bits: longer data is seen as several buffers


def _line_views(data: bytes | memoryview, starts: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Arrow binary views of data[start : start + length]: 16 bytes per line (its length, then
    its bytes when they fit, else its first 4 bytes, a buffer number and an offset) over `data`
    itself. Copying a file's lines out of the decompressed text took longer than the
    decompressing (a 10M-event month's day file: 0.55 -> 0.18 s on the reading thread)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    views = np.zeros((len(starts), 16), dtype=np.uint8)
    words = views.view(np.int32)  # (length, prefix, buffer, offset) for a long line
    words[:, 0] = lengths
    inline = lengths <= VIEW_INLINE_BYTES
    if len(buf):
        nearby = np.arange(VIEW_INLINE_BYTES)
        head = buf[np.minimum(starts[:, None] + nearby, len(buf) - 1)]
        head[nearby >= lengths[:, None]] = 0
        views[inline, 4:] = head[inline]
        views[~inline, 4:8] = head[~inline, :4]
    block = starts // VIEW_BUFFER_BYTES
    words[~inline, 2] = block[~inline]
    words[~inline, 3] = (starts - block * VIEW_BUFFER_BYTES)[~inline]
    whole = pa.py_buffer(data)
    blocks = int(block.max()) + 1 if len(block) else 0
    buffers = []
    for k in range(blocks):  # each buffer reaches the end of the last line starting in it
        first, end = k * VIEW_BUFFER_BYTES, int((starts + lengths)[block == k].max(initial=0))
        buffers.append(whole.slice(first, max(end - first, 0)))
    return pa.Array.from_buffers(
        pa.binary_view(), len(starts), [None, pa.py_buffer(views), *buffers]
    )


def _utf8_or_none(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _spec_message_sql(j: str) -> str:
    """A Segment/RudderStack message `j` as a canonical JSON event (mapping in docs/events.md)."""
    track = " ".join(
        f"when {quote(name)} then {quote(canonical)}"
        for name, canonical in SPEC_TRACK_EVENTS.items()
    )
    event_type = f"""case {j}->>'$.type'
            when 'page' then 'page_view' when 'screen' then 'page_view'
            when 'identify' then 'identify'
            when 'track' then case {j}->>'$.event' {track}
                else regexp_replace(lower(trim({j}->>'$.event')), '[^a-z0-9]+', '_', 'g') end
        end"""
    return f"""json_object(
        'event_id', {j}->'$.messageId',
        'event_type', {event_type},
        'event_at', coalesce({j}->'$.timestamp', {j}->'$.originalTimestamp'),
        'received_at', {j}->'$.receivedAt',
        'anonymous_id', {j}->'$.anonymousId',
        'user_id', {j}->'$.userId',
        'page_url', coalesce({j}->'$.context.page.url', {j}->'$.properties.url'),
        'page_type', {j}->'$.properties.page_type',
        'content_id', {j}->'$.properties.content_id',
        'content_category', coalesce({j}->'$.properties.content_category',
                                     {j}->'$.properties.category'),
        'element_id', {j}->'$.properties.element_id',
        'device_type', {j}->'$.context.device.type',
        'country', {j}->'$.context.location.country',
        'referrer', coalesce({j}->'$.context.page.referrer', {j}->'$.properties.referrer'),
        'utm_source', {j}->'$.context.campaign.source',
        'utm_medium', {j}->'$.context.campaign.medium',
        'utm_campaign', {j}->'$.context.campaign.name',
        'properties', case when {j}->>'$.type' <> 'identify' then json_merge_patch(json_merge_patch(
            {j}->'$.properties', {quote(json.dumps(dict.fromkeys(SPEC_LIFTED_PROPERTIES)))}),
            -- Segment Consent Management: the consent categories ride in the context
            case when {event_type} = 'consent'
                      and json_type({j}, '$.context.consent.categoryPreferences') = 'OBJECT'
                 then json_object('purposes', {j}->'$.context.consent.categoryPreferences')
                 else '{{}}' end) end
    )"""


def file_lines(path: Path) -> pa.Table:
    """A line-oriented file's lines (_line_table with source_file); InputError if unreadable
    or empty."""
    data = _read_bytes(path)
    _refuse_empty(path, data)
    return _named_lines(path, data)


def _refuse_empty(path: Path, head: bytes) -> None:
    if not head[:4096].strip():
        raise InputError(f"{path.name}: empty file")


def _named_lines(path: Path, data: bytes | memoryview, first_line: int = 1) -> pa.Table:
    lines = _line_table(data, first_line)
    return lines.add_column(0, "source_file", pa.array([path.name] * len(lines), pa.string()))


def _line_pieces(handle: BinaryIO, piece_bytes: int) -> Iterator[list[bytes | memoryview]]:
    """The stream about `piece_bytes` at a time, cut at line ends, as the buffers that hold
    each piece's lines: the line the previous read ended in, joined with its end, then the
    rest of the read up to its last line end as a view of it. Joining every read to the
    previous one's tail and cutting it again copied each byte twice (2.7 of 11 s reading a
    100M-event month's day file)."""
    rest = b""
    while block := handle.read(piece_bytes):
        first_end = block.find(b"\n") + 1
        if not first_end:  # no line end yet: a line longer than the read
            rest += block
            continue
        last_end = block.rfind(b"\n") + 1
        yield [rest + block[:first_end], memoryview(block)[first_end:last_end]]
        rest = block[last_end:]
    if rest:
        yield [rest]


def jsonl_chunks(path: Path, chunk_bytes: int) -> Iterator[pa.Table]:
    """One JSON Lines file's lines (as file_lines), decompressed and split about `chunk_bytes`
    of text at a time, cut at line ends: held whole, a 100M-event month's day file (1.6 GiB of
    text) took several times that outside DuckDB's memory limit. InputError when the file is
    empty or a JSON array (seen in its first piece), or where its gzip stream breaks."""
    with path.open("rb") as head:
        gzipped = head.read(2) == b"\x1f\x8b"
    first, lines_before = True, 0
    with _gzip_errors(path), igzip.open(path, "rb") if gzipped else path.open("rb") as handle:
        for buffers in _line_pieces(handle, chunk_bytes):
            if first:
                opening = b"".join(bytes(b[:4096]) for b in buffers)[:4096]
                if opening.lstrip()[:1] == b"[":
                    raise InputError(
                        f"{path.name}: a JSON array; expected JSON Lines (one JSON object per line)"
                    )
                _refuse_empty(path, opening)
                first = False
            tables = []
            for data in buffers:
                if len(data):
                    tables.append(_named_lines(path, data, lines_before + 1))
                    lines_before += len(tables[-1])
            yield pa.concat_tables(tables)
        if first:
            _refuse_empty(path, b"")


def decoded_lines_sql(settings: Settings) -> str:
    """The CTE `decoded` over the registered `_lines` (file_lines): each non-empty line's text
    without its terminator (null when over the size limit or not UTF-8), and `line_reason`,
    what makes a line unreadable whatever its format."""
    limit = settings.max_line_bytes
    return f"""decoded as (
            select source_file, source_line, nbytes, raw,
                   case when nbytes <= {limit} then text end as text,
                   case when nbytes > {limit} then format(
                            'line is {{}} bytes, over the {limit}-byte limit', nbytes)
                        when text is null then 'line is not valid UTF-8'
                   end as line_reason
            from _lines
            where nbytes > {limit} or text is null or not blank
        )"""


def parsed_json_lines_sql(settings: Settings) -> str:
    """The CTEs `decoded` (decoded_lines_sql) and `parsed`: its lines with `pre_reason`, why a
    line is not a JSON object (null when it is), and `spec_id`, the object's top-level
    messageId as JSON (a Segment/RudderStack message; event_id: the canonical event's).

    One parse a line: try() leaves null for malformed text (or JSON null), and only such
    lines, and those that do not open with a brace, are parsed again to say what they are
    (validating, typing and searching each line took twice the time)."""
    keys = quote(json.dumps({"messageId": "JSON", "event_id": "JSON"}))
    return f"""{decoded_lines_sql(settings)},
        keyed as (
            select *, case when line_reason is null then try(json_transform(text, {keys})) end
                      as top_keys
            from decoded
        ),
        parsed as (
            select * exclude (top_keys),
                case
                    when line_reason is not null then line_reason
                    when top_keys is null and not json_valid(text) then 'line is not valid JSON'
                    when not starts_with(text, '{{') and json_type(text) <> 'OBJECT' then
                        'line is a JSON ' || lower(json_type(text)) || ', not an object'
                end as pre_reason,
                top_keys.messageId as spec_id, top_keys.event_id as event_id_json
            from keyed
        )"""


def stage_jsonl(con: duckdb.DuckDBPyConnection, lines: pa.Table, settings: Settings) -> None:
    """Parse the lines of one or more files (jsonl_chunks, concatenated) in one statement."""
    con.register("_lines", lines)
    spec_types = ", ".join(quote(t) for t in sorted(SPEC_MESSAGE_TYPES))
    con.execute(
        f"""
        insert into _staged
        with {parsed_json_lines_sql(settings)},
        classified as (
            -- JSON functions raise on malformed text, so only parsed lines get a document
            select *, case when pre_reason is null then text end as j from parsed
        ),
        typed as (
            -- a null messageId is a message's too; an event_id says the line is canonical
            select *, coalesce(spec_id is not null or (event_id_json is null
                               and json_exists(j, '$.messageId')), false) as is_spec
            from classified
        )
        select
            source_file,
            source_line,
            -- a canonical event's text is its document: checked_sql quotes that if need be
            case when is_spec or pre_reason is not null
                 then left(coalesce(text, cast(raw as varchar)), {RAW_TEXT_CHARS}) end as raw_text,
            case when not is_spec then j
                 when j->>'$.type' in ({spec_types}) then {_spec_message_sql("j")}::varchar
            end as doc,
            case when is_spec and coalesce(j->>'$.type', '') not in ({spec_types})
                     then 'unsupported Segment/RudderStack message type '
                          || {sql_shown("j->>'$.type'")}
                 else pre_reason end as pre_reason
        from typed
        """
    )
    con.unregister("_lines")


def _fields_from_columns(columns: list[str], contract: EventContract) -> str:
    """SQL: a row's canonical fields as read (contract.read_types) from its flat text
    columns; a field without a column is null, `properties` text is parsed."""
    parts = []
    for name, kind in contract.read_types.items():
        if name not in columns:
            value = "null"
        elif name == "properties":
            value = (
                "case when properties is null or trim(properties) = '' then null "
                "when json_valid(properties) then json(properties) else to_json(properties) end"
            )
        else:
            value = ident(name)
        parts.append(f"{ident(name)} := ({value})::{kind}")
    return f"struct_pack({', '.join(parts)})"


@dataclass(frozen=True)
class Shape:
    """How the rows of a table-shaped file (CSV, Parquet) are read: the `columns` read (as
    text; nested values as JSON text), select expressions `prepared` over them first, then
    SQL over both: each row's canonical document `doc` (JSON text) or, when the columns are
    the canonical fields, the `fields` as read (contract.read_types), and the reason a row
    cannot be read. Fields are not written out as JSON to be parsed again (that was two
    fifths of a Parquet file's staging and checking); a quarantined row shows them."""

    columns: list[str]
    doc: str | None = None
    fields: str | None = None
    pre_reason: str = "null::varchar"
    prepared: str = ""

    @property
    def staging(self) -> tuple[str, str]:
        """The staging table the rows go to and the select item that gives each its content:
        the fields as read into `_staged_fields`, else the document into `_staged`."""
        if self.fields:
            return "_staged_fields", f"{self.fields} as fields"
        return "_staged", f"{self.doc} as doc"


def canonical_shape(path: Path, columns: list[str]) -> Shape:
    """Columns named as the canonical fields (docs/events.md); the required ones must exist."""
    contract = event_contract()
    missing = [c for c in contract.required if c not in columns]
    if missing:
        raise InputError(f"{path.name}: no column {', '.join(missing)} (see docs/events.md)")
    present = [c for c in contract.column_names if c in columns]
    return Shape(present, fields=_fields_from_columns(present, contract))


def _shaped_sql(source: str, shape: Shape) -> str:
    """A CTE `shaped`: the rows of `source` with the shape's prepared columns."""
    prepared = f", {shape.prepared}" if shape.prepared else ""
    return f"shaped as (select *{prepared} from {source})"


def stage_csv(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    settings: Settings,
    shape_of: Callable[[Path, list[str]], Shape] = canonical_shape,
) -> None:
    """CSV via DuckDB's reader; lines it cannot parse, or longer than max_line_bytes, come
    back from its rejects table."""
    con.execute("drop table if exists _csv_rejects; drop table if exists _csv_scans")
    reader = (
        f"read_csv({quote(str(path))}, header = true, all_varchar = true, "
        "store_rejects = true, rejects_table = '_csv_rejects', rejects_scan = '_csv_scans', "
        f"parallel = false, max_line_size = {settings.max_line_bytes})"
    )
    try:
        con.execute(f"create or replace temp table _csv as select * from {reader}")
    except duckdb.Error as exc:
        raise InputError(f"{path.name}: unreadable CSV ({first_line(exc)})") from None
    columns = [row[0] for row in con.execute("select column_name from (describe _csv)").fetchall()]
    rejected = con.execute("select count(distinct line) from _csv_rejects").fetchone()[0]
    good = con.execute("select count(*) from _csv").fetchone()[0]
    if good + rejected == 0:
        raise InputError(f"{path.name}: header-only CSV (no rows)")
    shape = shape_of(path, columns)
    staged, content = shape.staging
    # Good records fill the data lines (2..N) that the reader did not reject, in order.
    con.execute(
        f"""
        insert into {staged} by name
        with rejected as (
            select line, first(error_message order by column_idx) as message,
                   first(csv_line) as csv_line
            from _csv_rejects group by line
        ),
        good_lines as (
            select line, row_number() over (order by line) as ordinal
            from range(2, {good + rejected + 2}) as r(line)
            where line not in (select line from rejected)
        ),
        good as (
            select row_number() over () as ordinal, * from _csv
        ),
        {_shaped_sql("good", shape)}
        select {quote(path.name)} as source_file, g.line as source_line,
               left(concat_ws(',', {", ".join(ident(c) for c in columns)}),
                    {RAW_TEXT_CHARS}) as raw_text,
               {content},
               {shape.pre_reason} as pre_reason
        from shaped join good_lines g using (ordinal)
        union all
        select {quote(path.name)}, line, left(csv_line, {RAW_TEXT_CHARS}), null,
               'unparseable CSV line: ' || message
        from rejected
        """
    )


def _as_text(column: str, column_type: str) -> str:
    """SQL: a Parquet column as text; nested values (structs, lists, maps) as JSON."""
    nested = column_type.startswith(("STRUCT", "MAP")) or column_type.endswith("]")
    value = f"to_json({ident(column)})" if nested else ident(column)
    return f"cast({value} as varchar) as {ident(column)}"


def stage_parquet(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    shape_of: Callable[[Path, list[str]], Shape] = canonical_shape,
) -> None:
    reader = f"read_parquet({quote(str(path))}, file_row_number = true)"
    try:
        types = dict(
            con.execute(
                f"select column_name, column_type from (describe select * from {reader})"
            ).fetchall()
        )
    except duckdb.Error as exc:
        raise InputError(f"{path.name}: unreadable Parquet ({first_line(exc)})") from None
    types.pop("file_row_number")
    shape = shape_of(path, list(types))
    casts = ", ".join(_as_text(c, types[c]) for c in shape.columns)
    # null: checked_sql shows a quarantined row's fields instead
    row_text = "null" if shape.fields else f"left(to_json(flat)::varchar, {RAW_TEXT_CHARS})"
    staged, content = shape.staging
    inserted = con.execute(
        f"""
        insert into {staged} by name
        with flat as (select file_row_number + 1 as source_line, {casts} from {reader}),
        with_raw as (select *, {row_text} as raw_text from flat),
        {_shaped_sql("with_raw", shape)}
        select {quote(path.name)} as source_file, source_line, raw_text,
               {content},
               {shape.pre_reason} as pre_reason
        from shaped
        """
    )
    if inserted.fetchone()[0] == 0:
        raise InputError(f"{path.name}: Parquet file has no rows")

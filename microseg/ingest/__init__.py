"""Load event dump files into raw.events, one atomic transaction per file.

Every file goes through the same three stages, all in DuckDB (no Python loop per row); stages
1 and 2 run over a batch of files at once, so that DuckDB can use all its threads:
1. stage: read the file into `_staged(source_file, source_line, raw_text, doc, pre_reason)`,
   where `doc` is the event as a canonical JSON object (Segment/RudderStack messages are mapped
   here) and `pre_reason` says why a line could not even be parsed; a CSV or Parquet file of
   canonical columns goes to `_staged_fields`, with the fields as read instead of `doc`;
2. check: type the canonical fields and give each row its first contract violation, with the
   rules compiled from the event JSON Schema (microseg.contract);
3. load: first delivery of each new event_id into raw.events, repeats counted as duplicates,
   violations into raw.events_quarantine, and one raw.load_manifest row, in one transaction
   per file.
So for every file: rows read = loaded + duplicates + quarantined (+ unused: a source export's
events that are no behavior here, counted at stage 1 and not stored).
Modules: landing (which files, when), formats (stage 1; snowplow and ga4 for those exports,
pages for what their URLs say), rules (2), load (3 and the file).
"""

from microseg.ingest.landing import delivery_date, detect_format, expand_paths, sha256_of, split_due
from microseg.ingest.load import FileResult, ingest_paths

__all__ = [
    "FileResult",
    "delivery_date",
    "detect_format",
    "expand_paths",
    "ingest_paths",
    "sha256_of",
    "split_due",
]

"""Segments: the grammar of segments.yml (grammar.py) and its evaluation with dbt (run.py)."""

from microseg.segments.grammar import Segment, load_segments, mart_columns
from microseg.segments.run import TRIAL_SCHEMA, SegmentRun, run_segments, segment_run_values

__all__ = [
    "TRIAL_SCHEMA",
    "Segment",
    "SegmentRun",
    "load_segments",
    "mart_columns",
    "run_segments",
    "segment_run_values",
]

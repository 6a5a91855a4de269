"""`make docs`: dbt's documentation site and Great Expectations' Data Docs, built locally."""

from __future__ import annotations

from microseg.config import Settings, disable_telemetry
from microseg.data_docs import localize_data_docs
from microseg.quality import gx_context
from microseg.segments import load_segments, segment_vars
from microseg.transform import run_dbt
from microseg.warehouse import latest_as_of, require_warehouse


def build_docs(settings: Settings) -> dict[str, str]:
    """Build both sites; returns where to open them (file URLs)."""
    require_warehouse(settings)  # dbt's catalog reads the built tables
    # the segment models compile from segments.yml for a date, as the nightly run does
    segments = load_segments(settings.segments_file)
    plan = segment_vars(settings, segments, latest_as_of(settings), "marts")
    run_dbt(settings, "docs generate", "--static", "--vars", plan)
    gx_context(settings).build_data_docs()
    localize_data_docs(settings.data_docs_index.parent)
    return {
        "dbt docs": (settings.dbt_target_dir / "static_index.html").as_uri(),
        "Great Expectations Data Docs": settings.data_docs_index.as_uri(),
    }


if __name__ == "__main__":
    disable_telemetry()
    for name, url in build_docs(Settings.from_env()).items():
        print(f"{name}: {url}")

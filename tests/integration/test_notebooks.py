"""The analysts' notebooks run end to end against a published snapshot (nbclient, a real
kernel), and a broken one stops with one line."""

from __future__ import annotations

import shutil
import tempfile
from datetime import date, timedelta
from pathlib import Path

import nbformat
import pytest

from microseg.config import Settings
from microseg.docs import NOTEBOOKS_DIR, run_notebooks
from microseg.errors import MicrosegError
from microseg.publish import publish
from microseg.segments import load_segments, run_segments
from tests.helpers import run_cli

pytestmark = pytest.mark.slow

NIGHTS = [date(2026, 10, 4) + timedelta(days=i) for i in range(3)]


@pytest.fixture(scope="module")
def published(built: Settings, tmp_path_factory) -> Settings:
    """Three nights of segments on a copy of the shared warehouse, published for analysts."""
    home = tmp_path_factory.mktemp("notebooks_home")
    shutil.copy(built.warehouse_path, home)
    settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    for night in NIGHTS:
        run_segments(settings, night)
    publish(settings)
    return settings


def _outputs(notebook, kind: str) -> list:
    return [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if kind in output.get("data", {}) or output.get("output_type") == kind
    ]


def test_every_notebook_runs_and_shows_its_figures(published, monkeypatch) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="nb-", dir="/tmp"))  # short: socket paths <= 107
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    written = run_notebooks(published)
    names = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    assert [p.name for p in written] == names and "segments.ipynb" in names
    executed = nbformat.read(published.home / "notebooks" / "segments.ipynb", as_version=4)
    assert _outputs(executed, "error") == []
    assert len(_outputs(executed, "image/png")) == 3  # sizes, joins and leaves, overlap
    table = _outputs(executed, "text/plain")[0]["data"]["text/plain"]
    for segment in load_segments(published.segments_file):  # the sizes table names each one
        assert segment.name in table
    assert all(night.isoformat() in table for night in NIGHTS)
    assert list(scratch.iterdir()) == []  # the kernel's socket folder is gone
    scratch.rmdir()


def test_a_failing_cell_is_one_line_naming_the_notebook_and_cell(published, tmp_path) -> None:
    broken = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("x / 0")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    nbformat.write(broken, tmp_path / "broken.ipynb")
    with pytest.raises(MicrosegError) as failed:
        run_notebooks(published, tmp_path)
    assert str(failed.value) == "notebook broken.ipynb: cell 1: ZeroDivisionError: division by zero"


def test_without_a_snapshot_the_command_says_what_to_run(tmp_path) -> None:
    result = run_cli("notebooks", home=tmp_path / "empty")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no analysts' snapshot at {tmp_path / 'empty' / 'analytics.duckdb'}: "
        "run `microseg publish`"
    ]

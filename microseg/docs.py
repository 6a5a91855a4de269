"""`microseg docs`: dbt's documentation site and Great Expectations' Data Docs, built locally;
and `microseg notebooks`: the analysts' notebooks executed against the analysts' snapshot."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from microseg.activation.grammar import load_triggers
from microseg.activation.run import Evaluation, Window
from microseg.config import PROJECT_ROOT, Settings
from microseg.data_docs import localize_data_docs
from microseg.errors import MicrosegError
from microseg.publish import require_snapshot
from microseg.quality import gx_context
from microseg.segments import load_segments, segment_run_values
from microseg.transform import run_dbt
from microseg.warehouse import latest_as_of, require_warehouse


def build_docs(settings: Settings) -> dict[str, str]:
    """Build both sites; returns where to open them (file URLs)."""
    require_warehouse(settings)  # dbt's catalog reads the built tables
    run_dbt(settings, "docs generate", "--static", run_values=night_run_values(settings))
    gx_context(settings).build_data_docs()
    localize_data_docs(settings.data_docs_index.parent)
    return {
        "dbt docs": (settings.dbt_target_dir / "static_index.html").as_uri(),
        "Great Expectations Data Docs": settings.data_docs_index.as_uri(),
    }


def night_run_values(settings: Settings) -> dict:
    """The run values the segment models and trigger_firings compile with (dbt docs compiles
    every model; they refuse to compile without theirs): the configured segments and triggers
    for the newest night, as the nightly run passes them."""
    as_of = latest_as_of(settings)
    triggers = Evaluation(
        load_triggers(settings.triggers_file), Window.night(as_of), as_of, "marts"
    )
    return segment_run_values(load_segments(settings.segments_file), as_of) | triggers.run_values


NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOK_TIMEOUT_S = 300  # per cell


def run_notebooks(settings: Settings, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Execute every notebook of `folder` against this home's analysts' snapshot; the
    executed copies, figures included, go to $MICROSEG_HOME/notebooks with an HTML page each.
    A failing cell stops with one line naming the notebook, the cell and the error."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from nbconvert import HTMLExporter

    require_snapshot(settings)
    out_dir = settings.home / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    # one page per notebook with its figures embedded: it opens from disk, no server needed
    exporter = HTMLExporter(
        template_name="lab", exclude_input_prompt=True, exclude_output_prompt=True
    )
    written = []
    for path in sorted(folder.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        # a short private folder: Unix socket paths are limited to 107 bytes
        sockets = Path(tempfile.mkdtemp(prefix="microseg-kernel-"))
        kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(sockets / "ipc"))
        client = NotebookClient(
            notebook,
            km=kernel,
            timeout=NOTEBOOK_TIMEOUT_S,
            resources={"metadata": {"path": str(folder)}},
        )
        try:  # the kernel talks over Unix sockets in a private folder, not TCP
            client.execute(env={**os.environ, "MICROSEG_HOME": str(settings.home)})
        except CellExecutionError as exc:
            failed = next(
                (i for i, c in enumerate(notebook.cells) if any(
                    o.get("output_type") == "error" for o in c.get("outputs", [])
                )),
                None,
            )  # fmt: skip
            raise MicrosegError(
                f"notebook {path.name}: cell {failed}: {exc.ename}: {exc.evalue}"
            ) from None
        except (CellTimeoutError, DeadKernelError) as exc:
            raise MicrosegError(f"notebook {path.name}: {exc}".splitlines()[0]) from None
        finally:
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=True)
            shutil.rmtree(sockets, ignore_errors=True)
        target = out_dir / path.name
        nbformat.write(notebook, target)
        html, _ = exporter.from_notebook_node(notebook)
        target.with_suffix(".html").write_text(html, encoding="utf-8")
        written.append(target)
    return written

"""Run the numbered notebooks with papermill: the batch path is the interactive path."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .provenance import DATA_DIR

NOTEBOOK_DIR = DATA_DIR.parent / "notebooks"


def notebook_path(name: str) -> Path:
    """'01' or '01_rubric_generation' or a file name -> the notebook in notebooks/ ('02' is not '02b_…')."""
    every = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    matches = [p for p in every if name in (p.name, p.stem)] or [p for p in every if p.stem.startswith(f"{name}_")]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted(NOTEBOOK_DIR.glob("*.ipynb")))
        raise ValueError(f"notebook {name!r} matches {len(matches)} files (known: {known})")
    return matches[0]


def run_notebook(name: str, workspace: str | Path, parameters: dict | None = None, *, timeout: int = 3600) -> Path:
    """Execute a notebook with papermill; the executed copy lands in workspace/notebooks/."""
    import papermill as pm

    src = notebook_path(name)
    workspace = Path(workspace).resolve()
    out = workspace / "notebooks" / src.name
    out.parent.mkdir(parents=True, exist_ok=True)
    # the kernel is started as "python": make that this interpreter (the kit's venv)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pm.execute_notebook(str(src), str(out), parameters={"workspace": str(workspace), **(parameters or {})},
                        kernel_name="python3", cwd=str(NOTEBOOK_DIR), progress_bar=False,
                        execution_timeout=timeout)
    return out

"""Run the numbered notebooks with papermill: the batch path is the interactive path."""
from __future__ import annotations

import ast
import inspect
import json
import os
import re
import sys
from pathlib import Path

from promedical.core.ids import quote
from promedical.core.provenance import KIT_ROOT
from promedical.core.workspace import Workspace

_NOTHING = inspect.Parameter.empty


NOTEBOOK_DIR = KIT_ROOT / "notebooks"


def notebook_path(name: str) -> Path:
    """'01' or '01_rubric_generation' or a file name -> the notebook in notebooks/ (a name is a plain
    prefix of exactly one notebook: no glob characters, no folders; '02' is 02_… rather than 02b_…)."""
    known = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    stem = name[:-len(".ipynb")] if name.endswith(".ipynb") else name
    matches = [p for p in known if stem and p.stem.startswith(stem)] if re.fullmatch(r"[A-Za-z0-9_.-]+", stem) else []
    matches = ([p for p in matches if p.stem == stem] or [p for p in matches if p.stem.startswith(f"{stem}_")]
               or matches)
    if len(matches) != 1:
        raise ValueError(f"notebook {quote(name)} matches {len(matches)} notebooks; give a unique prefix of one of: "
                         f"{', '.join(p.stem for p in known)}")
    return matches[0]


def notebook_parameters(path: str | Path) -> dict:
    """{name: default} of the notebook's cell tagged "parameters" (simple assignments, literal defaults)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell.get("source", []))
            out = {}
            for node in ast.parse(source).body:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
                for t in targets:
                    if isinstance(t, ast.Name):
                        try:
                            out[t.id] = ast.literal_eval(node.value) if node.value is not None else None
                        except ValueError:
                            out[t.id] = None
            return out
    return {}


def check_notebook_params(path: str | Path, params: dict) -> None:
    """Raise ValueError for parameters the notebook does not take or values it would refuse. A step
    notebook takes every field of its step's typed config and checks the values as the config does;
    any other notebook, the names its parameters cell declares, with the type of the declared default
    (a None default takes anything)."""
    from promedical.core.params import params_problems
    from promedical.steps import notebook_step

    declared = notebook_parameters(path)
    hints = {k: _NOTHING if v is None else float if isinstance(v, float) else type(v) for k, v in declared.items()}
    step = notebook_step(Path(path).stem.split("_")[0])  # "03_reward_model" -> the reward step
    if step:
        hints.update(step.config.hints())
    problems = params_problems(params, hints, f"notebook {Path(path).stem}")
    if problems:
        raise ValueError("; ".join(problems))
    if step:
        step.config.from_dict({k: v for k, v in params.items() if k != "workspace"})


def run_notebook(name: str, workspace=None, parameters: dict | None = None, *, timeout: int = 3600) -> Path:
    """Execute a notebook with papermill; the executed copy lands in the workspace's notebooks/ folder.
    ``workspace`` is resolved by ``Workspace.of`` (None: the default workspace) and given to the notebook
    as its ``workspace`` parameter."""
    import logging

    import papermill as pm

    from promedical.steps import notebook_step

    # papermill's own parameter parser warns "Unable to parse line" on commented parameter lines; the
    # kit parses and checks the parameters itself (check_notebook_params), so that warning is noise
    logging.getLogger("papermill.translators").setLevel(logging.ERROR)
    src = notebook_path(name)
    step = notebook_step(src.stem.split("_")[0])
    parameters = step.config.fold_dotted(parameters or {}) if step else parameters or {}  # rm.lr=... -> rm = {...}
    check_notebook_params(src, parameters)
    ws = Workspace.of(workspace)
    out = ws.notebooks / src.name
    out.parent.mkdir(parents=True, exist_ok=True)
    # the kernel is started as "python": make that this interpreter (the kit's venv)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pm.execute_notebook(str(src), str(out), parameters={"workspace": str(ws), **parameters},
                        kernel_name="python3", cwd=str(NOTEBOOK_DIR), progress_bar=False,
                        execution_timeout=timeout)
    return out

"""Re-running one phase of a stage without paying for the others.

A phase function (``reward.step.judge_candidates``, ``bench.step.grade``, ...) takes values and a config
and writes its artefact to the workspace. Wrapped in ``Phase``, it first computes a key — a hash of
its inputs and of the config fields it reads — and, when the workspace holds a record of the same
phase with the same key and its artefacts are all still there, it says so and loads the artefact
instead of recomputing it::

    phase = Phase(ws, "reward.judge", inputs=(rubrics, candidates), config=judge_fields)
    if phase.reusable():
        return load(...)
    ...compute, write the artefacts...
    phase.done(ws.reward_judgments)

Change a candidate, a label or a config field and the key changes: the phase runs again. The
records live in ``<workspace>/phases/<name>.json`` (``force=True`` ignores them).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from promedical.core.files import write_json
from promedical.core.workspace import Workspace


def _plain(obj: Any) -> Any:
    """A JSON-able image of obj, for hashing: dataclasses and objects with to_dict() by value, paths by
    their content (a file) or name (anything else)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        values = {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"__type__": type(obj).__name__, **values}
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return _plain(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in obj]
        return sorted(items, key=json.dumps) if isinstance(obj, (set, frozenset)) else items
    if isinstance(obj, Path):
        if obj.is_file():
            digest = hashlib.sha256()
            with open(obj, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            return {"file_sha256": digest.hexdigest()}  # by content: a moved or copied file keeps its key
        return {"path": str(obj)}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "__iter__") and hasattr(obj, "__len__"):  # a datasets.Dataset and the like
        return [_plain(v) for v in obj]
    return repr(obj)


def fingerprint(*values: Any) -> str:
    """sha256 of the values' JSON image (stable across runs and processes)."""
    text = json.dumps([_plain(v) for v in values], sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Phase:
    """One phase's reuse record (see the module doc)."""

    def __init__(self, workspace, name: str, *, inputs: Any = (), config: Any = None, force: bool = False,
                 verbose: bool = True):
        self.ws = Workspace.of(workspace)
        self.name = name
        self.key = fingerprint(name, inputs, config)
        self.force = force
        self.verbose = verbose
        self.record = self.ws.phases / f"{name}.json"

    def _read(self) -> dict | None:
        try:
            data = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def reusable(self) -> bool:
        """True when the last run of this phase had the same key and its artefacts still exist."""
        if self.force:
            return False
        data = self._read()
        if not data or data.get("key") != self.key:
            return False
        artefacts = [self.ws.root / p for p in data.get("artefacts", [])]  # relative: a copied workspace reuses its own
        if not all(p.exists() for p in artefacts):
            return False
        if self.verbose:
            shown = ", ".join(str(p.relative_to(self.ws.root)) if p.is_relative_to(self.ws.root) else str(p)
                              for p in artefacts)
            print(f"{self.name}: inputs and config unchanged since the last run; reusing {shown}")
        return True

    def done(self, *artefacts: Path) -> None:
        """Record the key and the artefacts (inside the workspace: relative to it)."""
        def stored(path: Path) -> str:
            path = Path(path).resolve()
            return str(path.relative_to(self.ws.root)) if path.is_relative_to(self.ws.root) else str(path)

        write_json(self.record, {"name": self.name, "key": self.key, "artefacts": [stored(a) for a in artefacts]})

    def forget(self) -> None:
        self.record.unlink(missing_ok=True)

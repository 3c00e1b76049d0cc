"""The demo data shipped in data/: train and benchmark rubrics, gold-labelled candidates, split manifest."""
from __future__ import annotations

import json

from promedical.core.files import read_jsonl
from promedical.core.provenance import DATA_DIR
from promedical.core.rubric import Rubric
from promedical.core.rubric_files import read_rubrics

SPLITS = ("train", "bench")


def load_split(split: str) -> list[Rubric]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return read_rubrics(DATA_DIR / split / "rubrics.jsonl")


def load_candidates(n_prompts: int | None = None, split: str = "bench") -> list[dict]:
    """Candidate responses of a split with gold per-criterion labels; ``n_prompts`` keeps all candidates
    of the first n prompts (in file order), so every kept prompt still yields its pairs."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    candidates = read_jsonl(DATA_DIR / split / "candidates.jsonl")
    if n_prompts is None:
        return candidates
    keep = list(dict.fromkeys(c["prompt_id"] for c in candidates))[:n_prompts]
    return [c for c in candidates if c["prompt_id"] in set(keep)]


def load_manifest() -> dict:
    """The committed split manifest; a test checks it equals build_manifest()."""
    return json.loads((DATA_DIR / "splits.json").read_text(encoding="utf-8"))


def build_manifest() -> dict:
    """The split manifest: which rubric ids belong to which split (data/splits.json)."""
    return {
        "note": "Illustrative demo data, not medical advice. Train and bench are disjoint by id and scenario.",
        "splits": {s: {"file": f"{s}/rubrics.jsonl", "ids": [r.id for r in load_split(s)]} for s in SPLITS},
        "bench_candidates": "bench/candidates.jsonl",
    }

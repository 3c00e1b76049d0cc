"""Which rubrics a stage works on: the workspace's split (step 00's table, else the shipped demo split),
the training rubrics with their approved revisions, and candidates matched to them by id or lineage."""
from __future__ import annotations

import random

from promedical.core.data import load_split
from promedical.core.workspace import Workspace
from promedical.rubrics.store import open_store


def workspace_split(workspace=None, split: str = "train") -> list:
    """The workspace's instructions of a split as rubrics: step 00's curated table (each with the
    reference rubric its source carried, else no criteria yet) or, where 00 has not run, the shipped
    demo split (data/)."""
    from promedical.corpus.store import data_dir, instruction_rubrics

    ws = Workspace.of(workspace)
    if (data_dir(ws) / f"{split}.parquet").is_file():
        return instruction_rubrics(ws, split)
    return load_split(split)


def training_rubrics(workspace=None, n: int | None = None, seed: int = 0) -> list:
    """The workspace's train rubrics, each replaced by its clinician-approved revision where one exists;
    instructions with no rubric yet (neither a reference nor an approved draft) are left out."""
    approved = {r.id: r for r in open_store(workspace).rubrics(status="approved")}
    rubrics = [approved.get(r.id, r) for r in workspace_split(workspace, "train")]
    rubrics = [r for r in rubrics if r.criteria]
    random.Random(seed).shuffle(rubrics)
    return rubrics[:n] if n else rubrics


def match_prompt_ids(rubrics, candidates: list[dict]) -> list[dict]:
    """Candidates of these rubrics, a candidate's ``prompt_id`` matched to a rubric's id or to the
    original id its source gave it (step 00 prefixes ids with the source name)."""
    alias = {r.id: r.id for r in rubrics}
    for r in rubrics:
        original = ((r.provenance or {}).get("lineage") or {}).get("original_id")
        if original:
            alias.setdefault(str(original), r.id)
    return [{**c, "prompt_id": alias[c["prompt_id"]]} for c in candidates if c["prompt_id"] in alias]

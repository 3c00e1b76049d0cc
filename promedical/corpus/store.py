"""Where step 00 keeps its tables in a workspace (``W/data/``), and the reader every later step calls.

- ``instructions.parquet``: every ingested row (id, messages, text, lineage, labels from the source);
- ``rejects.jsonl``: every row ingest skipped, ``{"source", "row", "reason"}``;
- ``curated.parquet``: every ingested row with its fate (kept / stage / reason / duplicate_of / score),
  difficulty, category, specialty and split;
- ``train.parquet`` / ``bench.parquet``: the kept rows of each split (the dataset card's configs);
- ``funnel.json``, ``README.md`` (dataset card), ``split_audit.json``, ``labels/*.jsonl`` (LLM results).
Parquet files are written to a temporary name and renamed, so a reader never sees half a table.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from promedical.core.workspace import Workspace

SPLITS = ("train", "bench")


def data_dir(workspace) -> Path:
    """The workspace's step-00 folder (``Workspace.data``)."""
    return Workspace.of(workspace).data


def write_table(path: str | Path, rows, schema=None) -> Path:
    """Atomically write rows (a list of dicts or a pyarrow Table) as a Parquet file (never over a
    non-regular file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: exists and is not a regular file")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rows, pa.Table):
        table = rows
    else:
        table = pa.Table.from_pylist(rows, schema=schema) if rows or schema is not None else pa.table({})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_table(path: str | Path) -> list[dict]:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        return []
    return pq.read_table(path).to_pylist()


def read_instructions(workspace: str | Path, split: str | None = "train") -> list[dict]:
    """The workspace's curated instructions of one split ("train" | "bench"; None: both), in file order.

    Each row: id, messages (list of {role, content}, ending with a user turn), text, split, category,
    specialty, difficulty, difficulty_reason, rubric (a kit rubric dict when the source carried one, else
    None) and lineage (source, path, row, original_id). Raises FileNotFoundError when step 00 has not run."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}")
    d = data_dir(workspace)
    wanted = SPLITS if split is None else (split,)
    missing = [s for s in wanted if not (d / f"{s}.parquet").is_file()]
    if missing:
        raise FileNotFoundError(f"{d}: no {missing[0]}.parquet; run `promedical curate --workspace {workspace}` (step 00) first")
    out = []
    for s in wanted:
        for row in read_table(d / f"{s}.parquet"):
            row["rubric"] = json.loads(row["rubric"]) if row.get("rubric") else None
            row["lineage"] = json.loads(row["lineage"]) if isinstance(row.get("lineage"), str) else row.get("lineage")
            out.append(row)
    return out


def instruction_rubrics(workspace: str | Path, split: str | None = "train") -> list:
    """The split's instructions as kit ``Rubric`` objects, the shape step 01 drafts for: the source's
    reference rubric where one came with the row, else a rubric with no criteria yet."""
    from promedical.core.rubric import Rubric

    out = []
    for row in read_instructions(workspace, split):
        if row["rubric"]:
            r = Rubric.from_dict({**row["rubric"], "id": row["id"]})
        else:
            msgs = row["messages"]
            instruction = msgs[0]["content"] if len(msgs) == 1 else [dict(m) for m in msgs]
            r = Rubric(id=row["id"], instruction=instruction, criteria=[])
        r.category, r.specialty = row.get("category"), row.get("specialty")
        r.provenance = {**(r.provenance or {}), "lineage": row["lineage"]}
        out.append(r)
    return out

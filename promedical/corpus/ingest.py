"""Ingest a user's instructions into the workspace: sources, shapes, lineage, stable ids, bad-row reports.

Sources: ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` files and folders of them, folders written by
``datasets.save_to_disk``, and hub ids ``hf:ORG/NAME[:SPLIT]`` (through ``datasets.load_dataset``; needs
hub access). HealthBench JSONL and kit rubric JSONL keep their rubrics.

Shapes, tried in this order (``columns`` overrides any guess): HealthBench (``prompt`` messages +
``rubrics``); kit rubric (``instruction`` + ``criteria``); OpenAI ``messages``; ShareGPT ``conversations``
(``from``/``value``); question + options (MedQA ``options`` dict or list, columns ``A``..``E`` or MedMCQA
``opa``..``ope``), turned into one text; one prompt column (``prompt``, ``instruction``, ``question``,
``input``, ``query``, ``text``; Alpaca's ``instruction`` + ``input`` are joined). An optional ``system``
column becomes the first turn. Trailing assistant turns (the answer in SFT data) are dropped, so every
instruction ends with a user turn; the count is kept in ``dropped_turns``.

Every row gets a stable id, ``SOURCE:ORIGINAL_ID`` or ``SOURCE:h<sha1 of the messages>``, that follows the
kit's id rule (``promedical.core.ids``): a file name or original id with other characters (spaces,
newlines, bidi or ANSI control characters, non-ASCII letters, over 128 characters) is turned into a valid
one (each run of other characters becomes ``-``, and a short hash of the original keeps two originals
apart), while the lineage keeps the original (path, original id). Re-ingesting a source adds nothing twice.
A bad row is skipped and reported as ``PATH:ROW: reason``; nothing disappears without a line.

One writer at a time (``store.writer_lock``): a second ``ingest`` or ``curate`` into the same workspace
waits, then stops with ``WorkspaceBusy``; files inside the workspace are never read as a source.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterator

from promedical.core.files import write_json, write_jsonl
from promedical.core.ids import id_problem
from promedical.core.jsonl import iter_jsonl
from promedical.core.workspace import Workspace
from promedical.corpus.readers import expand_source
from promedical.corpus.records import RowError, content_hash, instruction_text, record_to_instruction
from promedical.corpus.store import data_dir, iter_batches, table_writer, writer_lock

_NOT_ID = re.compile(r"[^A-Za-z0-9._:+/@#-]+")


# ----------------------------------------------------------------------------------------------
# Ids from file names and data
# ----------------------------------------------------------------------------------------------
def _digest(text: str, n: int = 6) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def id_part(text: str, limit: int = 96) -> str:
    """``text`` (a file name, a folder path, an original id) as characters the id rule allows: itself when
    it already is, else NFKC-folded, each run of other characters as ``-``, trimmed to start and end with
    a letter or digit, at most ``limit`` characters, plus ``-`` and a 6-digit hash of the original (so two
    originals never meet in one id)."""
    if len(text) <= limit and id_problem(text) is None:
        return text
    cleaned = _NOT_ID.sub("-", unicodedata.normalize("NFKC", text))
    cleaned = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)[:limit - 7]
    cleaned = re.sub(r"[^A-Za-z0-9]+$", "", cleaned)
    return f"{cleaned}-{_digest(text)}" if cleaned else f"x{_digest(text)}"


def row_id(source: str, original: str | None, messages: list[dict]) -> str:
    """The stable id of a row: ``SOURCE:ORIGINAL_ID`` or ``SOURCE:h<hash of the messages>`` (``source`` is
    already an id part); always a valid id (at most 128 characters)."""
    if original is None:
        return f"{source}:h{content_hash(messages)}"
    return f"{source}:{id_part(original, max(16, 127 - len(source)))}"


# ----------------------------------------------------------------------------------------------
# Ingest into the workspace
# ----------------------------------------------------------------------------------------------
def _guarded(rows):
    """Rows of a reader; a file that breaks mid-way (corrupt Parquet, I/O error) ends with one reject line."""
    row = 0
    try:
        for row, obj, err in rows:
            yield row, obj, err
    except Exception as exc:  # pyarrow, datasets and OS errors: report, keep the rows read so far
        yield row + 1 if row else 0, None, f"unreadable file: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def unique_name(name: str, label: str, taken: dict[str, str]) -> str:
    """The source name for ``label`` (an id part, see ``id_part``): its own name unless another path already
    has it, then parent/name."""
    def capped(c: str) -> str:  # SOURCE:ID stays within the id rule's 128 characters
        return c if len(c) <= 96 else id_part(c, 96)

    name = "/".join(id_part(p, 48) for p in name.split("/"))
    parts = [id_part(p, 48) for p in Path(label).parts[:-1] if p not in ("/", "", ".", "..")]
    candidate, k = capped(name), len(parts)
    while taken.get(candidate, label) != label and k > 0:
        k -= 1
        name = f"{parts[k]}/{name}"
        candidate = capped(name)
    if taken.get(candidate, label) != label:
        raise ValueError(f"{label}: source name {name!r} is taken by {taken[candidate]}")
    taken[candidate] = label
    return candidate


def iter_rows(spec: str, columns: dict | None = None, max_chars: int = 20000,
              taken: dict[str, str] | None = None, exclude: Path | None = None) -> Iterator[tuple[dict | None, dict | None]]:
    """(instruction row, None) or (None, reject {"source", "row", "reason"}) for every row of a source.
    ``taken`` maps source names already in use to their paths: a second file with the same name
    (train/rubrics.jsonl and bench/rubrics.jsonl) is named by its parent folder too. Files under
    ``exclude`` (the workspace) are not read."""
    taken = {} if taken is None else taken
    for name, label, factory in expand_source(spec, exclude=exclude):
        name = unique_name(name, label, taken)
        seen: dict[str, int] = {}
        for row, obj, err in _guarded(factory(max_chars)):
            try:
                if err:
                    raise RowError(err)
                rec = record_to_instruction(obj, columns)
                chars = sum(len(m["content"]) for m in rec["messages"])
                if chars > max_chars:
                    raise RowError(f"over-long: {chars} characters > max_chars {max_chars}")
                hashed = rec["original_id"] is None
                rid = row_id(name, rec["original_id"], rec["messages"])
                if rid in seen:
                    raise RowError(f"exact duplicate of {rid} (identical messages, row {seen[rid]})" if hashed
                                   else f"duplicate id {rec['original_id']!r} (first on row {seen[rid]})")
                seen[rid] = row
            except RowError as exc:
                yield None, {"source": label, "row": row, "reason": str(exc)}
                continue
            yield {"id": rid, "messages": rec["messages"], "text": instruction_text(rec["messages"]),
                   "source": name, "path": label, "row": row, "original_id": rec["original_id"],
                   "format": rec["format"], "dropped_turns": rec["dropped_turns"],
                   "category": rec["category"], "specialty": rec["specialty"],
                   "rubric": json.dumps(rec["rubric"], ensure_ascii=False) if rec["rubric"] else None}, None


def instructions_schema():
    import pyarrow as pa

    s, i = pa.string(), pa.int64()
    return pa.schema([("id", s), ("messages", pa.list_(pa.struct([("role", s), ("content", s)]))), ("text", s),
                      ("source", s), ("path", s), ("row", i), ("original_id", s), ("format", s),
                      ("dropped_turns", i), ("category", s), ("specialty", s), ("rubric", s)])


MAX_PROBLEMS = 10_000  # reject lines returned (and printed); every reject stays in rejects.jsonl
REASON_KINDS = ("no user text", "wrong type", "empty", "over-long", "not valid UTF-8", "malformed JSON", "unknown role",
                "duplicate id", "exact duplicate", "wrong number of fields", "HealthBench record", "kit rubric", "line is")


def reason_kind(reason: str) -> str:
    """The kind of a reject reason, for counts (the full reason stays in the report)."""
    return next((k for k in REASON_KINDS if reason.startswith(k)), reason.split(":")[0])


def read_rejects(workspace) -> list[dict]:
    path = data_dir(workspace) / "rejects.jsonl"
    return [obj for _, obj, err in iter_jsonl(path) if err is None] if path.is_file() else []


def ingest(sources: list[str], workspace, *, columns: dict | None = None, max_chars: int = 20000) -> dict:
    """Add the rows of every source to ``W/data/instructions.parquet``; rejects go to ``W/data/rejects.jsonl``.

    Every source is checked before anything is written (a missing path is a ValueError naming it; so is
    a source inside the workspace, and the workspace's own files in a folder source are skipped). One
    writer at a time: WorkspaceBusy (a ValueError) when another ingest or curate holds the workspace.
    Returns {"sources": [per-source counts], "added", "already", "rejected", "problems": ["PATH:ROW: reason"]}."""
    home = Workspace.of(workspace).root
    for spec in sources:
        expand_source(spec, exclude=home)  # fail early, before writing anything
    with writer_lock(workspace):
        return _ingest(sources, workspace, columns, max_chars, home)


def _ingest(sources, workspace, columns, max_chars, home) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = data_dir(workspace)
    schema = instructions_schema()
    path = d / "instructions.parquet"
    known: set[str] = set()
    taken: dict[str, str] = {}
    if path.is_file():
        light = pq.read_table(path, columns=["id", "source", "path"], page_checksum_verification=True)
        known = set(light["id"].to_pylist())
        taken = dict(zip(light["source"].to_pylist(), light["path"].to_pylist()))
    rejects = {(r["source"], r["row"]): r for r in read_rejects(workspace)}
    new_rows: list[dict] = []
    added = 0
    per_source, problems = [], []
    # streamed: the existing rows are copied batch by batch, new rows leave Python every 10,000
    with table_writer(path, schema) as writer:
        if path.is_file():
            for batch in iter_batches(path):
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))
        for spec in sources:
            counts = Counter()
            reasons = Counter()
            for rec, bad in iter_rows(spec, columns, max_chars, taken, exclude=home):
                counts["rows"] += 1
                if bad is not None:
                    counts["rejected"] += 1
                    reasons[reason_kind(bad["reason"])] += 1
                    if len(problems) < MAX_PROBLEMS:
                        problems.append(f"{bad['source']}:{bad['row']}: {bad['reason']}")
                    rejects[(bad["source"], bad["row"])] = bad
                elif rec["id"] in known:
                    counts["already"] += 1
                else:
                    known.add(rec["id"])
                    new_rows.append(rec)
                    counts["added"] += 1
                    if len(new_rows) >= 10_000:
                        writer.write_table(pa.Table.from_pylist(new_rows, schema=schema))
                        added, new_rows = added + len(new_rows), []
            per_source.append({"source": spec, "rows": counts["rows"], "added": counts["added"],
                               "already": counts["already"], "rejected": counts["rejected"], "reasons": dict(reasons)})
        writer.write_table(pa.Table.from_pylist(new_rows, schema=schema))
        added += len(new_rows)
    write_jsonl(d / "rejects.jsonl", list(rejects.values()))
    log_path = d / "sources.json"
    log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else []
    write_json(log_path, log + per_source)
    return {"sources": per_source, "added": added, "already": sum(s["already"] for s in per_source),
            "rejected": sum(s["rejected"] for s in per_source), "total": len(known),
            "problems": problems}

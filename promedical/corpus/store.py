"""Where step 00 keeps its tables in a workspace (``W/data/``), and the reader every later step calls.

- ``instructions.parquet``: every ingested row (id, messages, text, lineage, labels from the source);
- ``rejects.jsonl``: every row ingest skipped, ``{"source", "row", "reason"}``;
- ``curated.parquet``: every ingested row with its fate (kept / stage / reason / duplicate_of / score),
  difficulty, category, specialty and split;
- ``train.parquet`` / ``bench.parquet``: the kept rows of each split (the dataset card's configs);
- ``funnel.json``, ``README.md`` (dataset card), ``split_audit.json``, ``labels/*.jsonl`` (LLM results).
Parquet files are written to a temporary name and renamed, so a reader never sees half a table, with
page checksums (a reader verifies them: a flipped bit is an error, never another row's text).

One writer at a time: ``ingest`` and ``curate`` hold :func:`writer_lock` (``W/data/tables.lock``) while they
read and replace the tables; a second writer waits up to ``LOCK_WAIT_S`` seconds, then stops with
:class:`WorkspaceBusy` (one line) and writes nothing. The holder first deletes the temporary files a killed
writer left behind (``.NAME.*.tmp``).

One curation is one unit: every table and JSON file it writes carries the same ``curation`` id
(Parquet schema metadata, a JSON key), and ``funnel.json`` is written last. :func:`check_curation` (called
by every reader here) refuses outputs whose ids differ from ``funnel.json``'s: a curation killed mid-way
is reported as interrupted until curate runs again, so ``--explain`` and ``--export`` never disagree.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from promedical.core.files import locked
from promedical.core.workspace import Workspace

SPLITS = ("train", "bench")


LOCK_WAIT_S = 30.0  # how long a second ingest/curate waits for the first before it stops (WorkspaceBusy)


CURATION_KEY = b"promedical.curation"  # Parquet schema metadata key: the curation that wrote the table


CURATION_TABLES = ("curated.parquet", "train.parquet", "bench.parquet")


CURATION_JSON = ("split_audit.json",)  # funnel.json (written last) is the reference


_TEMP = re.compile(r"^\..+\.tmp$")  # atomic writers' temporary names: .NAME.<random>.tmp


class WorkspaceBusy(ValueError):
    """Another ingest or curate holds the workspace's tables; one line, nothing written."""


class CurationError(ValueError):
    """The curation outputs do not belong together (a curation was interrupted); one line."""


@contextmanager
def writer_lock(workspace, wait: float | None = None):
    """Hold the workspace's step-00 tables for one writer (ingest or curate), waiting at most ``wait``
    seconds (default ``LOCK_WAIT_S``) for another; then remove the temporary files killed writers left."""
    d = data_dir(workspace)
    d.mkdir(parents=True, exist_ok=True)
    wait = LOCK_WAIT_S if wait is None else wait
    try:
        with locked(d / "tables", timeout=wait):
            clean_stale_temps(d)
            yield d
    except TimeoutError:
        raise WorkspaceBusy(f"{d}: busy: another ingest or curate is writing this workspace (waited {wait:g} s); "
                            f"run this one when it has finished") from None


def clean_stale_temps(folder: Path) -> list[Path]:
    """Delete the atomic writers' temporary files in ``folder`` and ``folder/labels`` (call it only while
    holding the writer lock: then no live writer owns one). Returns what was removed."""
    removed = []
    for sub in (folder, folder / "labels"):
        if not sub.is_dir():
            continue
        for p in sub.iterdir():
            if _TEMP.match(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def data_dir(workspace) -> Path:
    """The workspace's step-00 folder (``Workspace.data``)."""
    return Workspace.of(workspace).data


@contextmanager
def table_writer(path: str | Path, schema, curation: str | None = None):
    """A Parquet file written batch by batch (``writer.write_table(t)``) with page checksums, to a temporary
    name renamed into place when the block ends without an error (never over a non-regular file);
    ``curation`` stamps the id of the curation that wrote it."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: exists and is not a regular file")
    path.parent.mkdir(parents=True, exist_ok=True)
    if curation is not None:
        schema = schema.with_metadata({**(schema.metadata or {}), CURATION_KEY: curation.encode()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema, write_page_checksum=True) as writer:
            yield writer
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(path: str | Path, rows, schema=None, curation: str | None = None) -> Path:
    """Atomically write rows (a list of dicts or a pyarrow Table) as one Parquet file (``table_writer``)."""
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        table = rows
    else:
        table = pa.Table.from_pylist(rows, schema=schema) if rows or schema is not None else pa.table({})
    with table_writer(path, table.schema, curation) as writer:
        writer.write_table(table)
    return Path(path)


def iter_batches(path: str | Path, columns: list[str] | None = None, batch_size: int = 10_000):
    """A Parquet file's rows as pyarrow RecordBatches of at most ``batch_size`` rows, checksums verified."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path, page_checksum_verification=True) as pf:
        yield from pf.iter_batches(batch_size=batch_size, columns=columns)


def open_table(path: str | Path):
    """A Parquet file as a pyarrow Table, its page checksums verified where it has them."""
    import pyarrow.parquet as pq

    return pq.read_table(path, page_checksum_verification=True)


def read_table(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return open_table(path).to_pylist()


def table_curation(path: Path) -> str | None:
    """The curation id stamped on a Parquet table (None: none, or a table from before the stamp)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    value = meta.get(CURATION_KEY)
    return value.decode() if value is not None else None


def check_curation(workspace) -> str | None:
    """The id of the workspace's last complete curation; CurationError when its outputs are a mix of
    curations (one was killed mid-way) or lack funnel.json. None for outputs written before ids were
    stamped (nothing stamped anywhere)."""
    d = data_dir(workspace)
    funnel = d / "funnel.json"
    want = None
    if funnel.is_file():
        try:
            want = json.loads(funnel.read_text(encoding="utf-8")).get("curation")
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise CurationError(f"{funnel}: unreadable; run `promedical curate --workspace {workspace}` again") from None
    found = {}
    for name in CURATION_TABLES:
        if (d / name).is_file():
            try:
                found[name] = table_curation(d / name)
            except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a broken footer
                raise CurationError(f"{d / name}: unreadable ({type(exc).__name__}); run curate again") from None
    for name in CURATION_JSON:
        if (d / name).is_file():
            try:
                found[name] = json.loads((d / name).read_text(encoding="utf-8")).get("curation")
            except (ValueError, UnicodeDecodeError, AttributeError):
                found[name] = "unreadable"
    if want is None and not any(found.values()):
        return None  # outputs from before curation ids (or nothing curated yet)
    odd = sorted(name for name, got in found.items() if got != want)
    if want is None or odd:
        what = "funnel.json is missing" if want is None else f"{', '.join(odd)} from another curation than funnel.json"
        raise CurationError(f"{d}: the last curation was interrupted ({what}); its outputs do not belong together. "
                            f"Run `promedical curate --workspace {workspace}` again")
    return want


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
    check_curation(workspace)
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

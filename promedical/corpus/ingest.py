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

Every row gets a stable id, ``SOURCE:ORIGINAL_ID`` or ``SOURCE:h<sha1 of the messages>``, and its lineage
(source, path, row, original id). Re-ingesting a source adds nothing twice. A bad row is skipped and
reported as ``PATH:ROW: reason``; nothing disappears without a line.
"""
from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Iterator

from promedical.core.files import write_json, write_jsonl
from promedical.core.jsonl import iter_jsonl
from promedical.core.rubric import rubric_problems
from promedical.corpus.store import data_dir, write_table

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


PROMPT_NAMES = ("prompt", "instruction", "question", "input", "query", "text")


ID_NAMES = ("id", "_id", "prompt_id", "qid", "question_id", "uid")


SYSTEM_NAMES = ("system", "system_prompt")


ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "bot": "assistant",
         "model": "assistant", "chatgpt": "assistant", "system": "system"}


OPTION_SETS = (tuple("ABCDE"), ("opa", "opb", "opc", "opd", "ope"))


MAX_JSON_BYTES = 1 << 30  # a .json file is read whole: refuse one over 1 GiB (use JSONL or Parquet)


class RowError(ValueError):
    """A row that cannot become an instruction; the message is the reason reported."""


# ----------------------------------------------------------------------------------------------
# Reading sources: yield (row number, record or None, error or None)
# ----------------------------------------------------------------------------------------------
def _iter_json(path: Path):
    if path.stat().st_size > MAX_JSON_BYTES:
        yield 0, None, f"file is over {MAX_JSON_BYTES} bytes; use JSONL or Parquet"
        return
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        yield 0, None, f"not valid UTF-8 (byte {exc.start})"
        return
    except (ValueError, RecursionError) as exc:
        yield 0, None, f"malformed JSON: {exc}"
        return
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("data", "rows", "examples") if isinstance(obj.get(k), list)), [obj])
    if not isinstance(obj, list):
        yield 0, None, "a .json source must hold a list of records"
        return
    for i, rec in enumerate(obj, start=1):
        yield i, rec, None


def _iter_csv(path: Path, max_field: int):
    csv.field_size_limit(max(max_field, 131072))
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield 0, None, f"unreadable CSV header: {exc}"
            return
        header = [h.strip().lstrip("\ufeff") for h in header]
        row = 0
        while True:
            row += 1
            try:
                fields_ = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield row, None, f"unreadable CSV row: {exc}"
                continue
            if not any(f.strip() for f in fields_):
                yield row, None, "empty row"
                continue
            if len(fields_) != len(header):
                yield row, None, f"wrong number of fields: {len(fields_)} (header has {len(header)})"
                continue
            if any("\udc80" <= ch <= "\udcff" for f in fields_ for ch in f):
                yield row, None, "not valid UTF-8 (undecodable bytes)"
                continue
            yield row, dict(zip(header, fields_)), None


def _iter_parquet(path: Path):
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            row += 1
            yield row, rec, None


def _iter_dataset(ds):
    for i, rec in enumerate(ds, start=1):
        yield i, rec, None


def iter_file(path: Path, max_chars: int):
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return ((line, obj, err) for line, obj, err in iter_jsonl(path))
    if suffix == ".json":
        return _iter_json(path)
    if suffix == ".csv":
        return _iter_csv(path, max_chars * 2)
    if suffix == ".parquet":
        return _iter_parquet(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r} (expected {', '.join(FILE_SUFFIXES)})")


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json"))


def expand_source(spec: str) -> list[tuple[str, str, object]]:
    """One source spec -> [(source name, path label, row iterator factory)]. Raises ValueError on a
    source that cannot be read at all (missing path, unsupported type)."""
    if spec.startswith("hf:"):
        name, _, split = spec[3:].partition(":")
        if not name:
            raise ValueError(f"{spec}: expected hf:ORG/NAME[:SPLIT]")

        def hub(max_chars, name=name, split=split or "train"):
            from datasets import load_dataset  # needs hub access (not available offline)

            return _iter_dataset(load_dataset(name, split=split))
        return [(f"{name}:{split or 'train'}", spec, hub)]
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"{spec}: no such file or folder")
    if is_saved_dataset(path):
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        parts = list(ds.items()) if isinstance(ds, DatasetDict) else [(None, ds)]
        return [(path.name if split is None else f"{path.name}/{split}", spec if split is None else f"{spec}[{split}]",
                 lambda max_chars, d=d: _iter_dataset(d)) for split, d in parts]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
        if not files:
            raise ValueError(f"{spec}: folder holds no {', '.join(FILE_SUFFIXES)} files")
        return [(f"{path.name}/{f.relative_to(path).with_suffix('').as_posix()}", str(f),
                 lambda max_chars, f=f: iter_file(f, max_chars)) for f in files]
    if not path.is_file():
        raise ValueError(f"{spec}: not a regular file")
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise ValueError(f"{spec}: unsupported file type {path.suffix!r} (expected {', '.join(FILE_SUFFIXES)})")
    return [(path.stem, spec, lambda max_chars, p=path: iter_file(p, max_chars))]


# ----------------------------------------------------------------------------------------------
# Shapes: one record -> messages (+ rubric, labels)
# ----------------------------------------------------------------------------------------------
def _col(obj: dict, columns: dict, key: str, guesses: tuple = ()):
    if key in columns:
        return columns[key], obj.get(columns[key])
    for name in guesses or (key,):
        if name in obj and obj[name] is not None:
            return name, obj[name]
    return None, None


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"wrong type: {what} must be text, got {type(value).__name__}")
    return value


def _turns(value, what: str, role_key: str, text_key: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RowError(f"wrong type: {what} must be a non-empty list of turns")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise RowError(f"wrong type: {what}[{i}] must be an object")
        rk = role_key if role_key in turn else ("role" if "role" in turn else "from")
        tk = text_key if text_key in turn else ("content" if "content" in turn else "value")
        role = turn.get(rk)
        if not isinstance(role, str) or role.lower() not in ROLES:
            raise RowError(f"unknown role {role!r} in {what}[{i}] (expected one of {', '.join(sorted(ROLES))})")
        content = _text(turn.get(tk), f"{what}[{i}].{tk}")
        out.append({"role": ROLES[role.lower()], "content": content})
    return out


def _options_text(obj: dict, columns: dict) -> str | None:
    _, options = _col(obj, columns, "options")
    if isinstance(options, str) and options.strip().startswith(("{", "[")):
        try:
            options = json.loads(options)
        except ValueError:
            raise RowError("wrong type: options is not valid JSON") from None
    items: list[tuple[str, str]] = []
    if isinstance(options, dict):
        items = [(str(k), v) for k, v in options.items()]
    elif isinstance(options, list):
        items = [(chr(ord("A") + i), v) for i, v in enumerate(options)]
    elif options is not None:
        raise RowError(f"wrong type: options must be an object or a list, got {type(options).__name__}")
    else:
        for names in OPTION_SETS:
            if any(n in obj for n in names):
                items = [(chr(ord("A") + i), obj.get(n)) for i, n in enumerate(names) if n in obj]
                break
    items = [(k, v if isinstance(v, str) else str(v)) for k, v in items if v is not None and str(v).strip()]
    if not items:
        return None
    return "\n".join(f"{k}. {v.strip()}" for k, v in items)


def record_to_instruction(obj, columns: dict | None = None) -> dict:
    """One record -> {"messages", "format", "rubric", "category", "specialty", "original_id"}; RowError if bad."""
    columns = columns or {}
    if not isinstance(obj, dict):
        raise RowError(f"wrong type: a row must be an object, got {type(obj).__name__}")
    rubric = None
    fmt = None
    messages: list[dict] | None = None
    if not columns and isinstance(obj.get("prompt"), list) and "rubrics" in obj:  # HealthBench
        from promedical.core import healthbench

        problems = healthbench.record_problems(obj)
        if problems:
            raise RowError(f"HealthBench record: {problems[0][0]}: {problems[0][1]}")
        rubric = healthbench.to_rubric(obj).to_dict()
        messages, fmt = _turns(obj["prompt"], "prompt", "role", "content"), "healthbench"
    elif not columns and "instruction" in obj and "criteria" in obj:  # kit rubric
        problems = rubric_problems(obj)
        if problems:
            raise RowError(f"kit rubric: {problems[0][0]}: {problems[0][1]}")
        rubric, fmt = obj, "kit-rubric"
        ins = obj["instruction"]
        messages = [{"role": "user", "content": ins}] if isinstance(ins, str) else _turns(ins, "instruction", "role", "content")
    else:
        name, value = _col(obj, columns, "messages")
        if value is not None or "messages" in columns:
            messages, fmt = _turns(value, name, "role", "content"), "messages"
        if messages is None:
            name, value = _col(obj, columns, "conversations")
            if value is not None or "conversations" in columns:
                messages, fmt = _turns(value, name, "from", "value"), "sharegpt"
        if messages is None:
            qname, question = _col(obj, columns, "question")
            options = _options_text(obj, columns) if question is not None else None
            if options is not None:
                text = _text(question, qname).strip()
                if not text:
                    raise RowError(f"empty: {qname} has no text")
                messages, fmt = [{"role": "user", "content": f"{text}\n\nOptions:\n{options}"}], "question+options"
        if messages is None:
            name, value = _col(obj, columns, "prompt", PROMPT_NAMES)
            if name is None:
                raise RowError(f"no user text: none of the columns {', '.join(PROMPT_NAMES + ('messages', 'conversations'))} "
                               f"(name one with --columns prompt=NAME)")
            if isinstance(value, list):
                messages, fmt = _turns(value, name, "role", "content"), "messages"
            else:
                text = _text(value, name)
                extra = obj.get(columns.get("input", "input")) if name != columns.get("input", "input") else None
                if isinstance(extra, str) and extra.strip():  # Alpaca: instruction + input
                    text = f"{text.strip()}\n\n{extra.strip()}"
                messages, fmt = [{"role": "user", "content": text}], "prompt"
    sname, system = _col(obj, columns, "system", SYSTEM_NAMES)
    if system is not None and not (messages and messages[0]["role"] == "system"):
        system = _text(system, sname)
        if system.strip():
            messages = [{"role": "system", "content": system}] + messages
    dropped = 0
    while messages and messages[-1]["role"] == "assistant":
        messages, dropped = messages[:-1], dropped + 1
    if not any(m["role"] == "user" for m in messages):
        raise RowError("no user text: no user turn")
    for i, m in enumerate(messages):
        if not m["content"].strip():
            raise RowError(f"empty: turn {i} ({m['role']}) has no text")
        if "\x00" in m["content"] or any("\udc80" <= ch <= "\udcff" for ch in m["content"]):
            raise RowError(f"not valid UTF-8 (undecodable bytes in turn {i})")
    labels = {}
    for key in ("category", "specialty"):
        _, value = _col(obj, columns, key)
        if value is None and rubric is not None:
            value = rubric.get(key)
        labels[key] = value.strip() if isinstance(value, str) and value.strip() else None
    _, original = _col(obj, columns, "id", ID_NAMES)
    if fmt == "healthbench":
        original = obj.get("prompt_id")
    if original is not None and (isinstance(original, bool) or not isinstance(original, (str, int))):
        raise RowError(f"wrong type: id must be text or an integer, got {type(original).__name__}")
    original = str(original).strip() if original is not None and str(original).strip() else None
    return {"messages": messages, "format": fmt, "rubric": rubric, "original_id": original,
            "dropped_turns": dropped, **labels}


def instruction_text(messages: list[dict]) -> str:
    """The text dedup and labels look at: the user turn alone, or every turn as 'role: content'."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def content_hash(messages: list[dict]) -> str:
    return hashlib.sha1(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:12]


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
    """The source name for ``label``: its own name unless another path already has it, then parent/name."""
    parts = Path(label).parts[:-1]
    candidate, k = name, len(parts)
    while taken.get(candidate, label) != label and k > 0:
        k -= 1
        candidate = f"{parts[k]}/{candidate}"
    if taken.get(candidate, label) != label:
        raise ValueError(f"{label}: source name {name!r} is taken by {taken[candidate]}")
    taken[candidate] = label
    return candidate


def iter_rows(spec: str, columns: dict | None = None, max_chars: int = 20000,
              taken: dict[str, str] | None = None) -> Iterator[tuple[dict | None, dict | None]]:
    """(instruction row, None) or (None, reject {"source", "row", "reason"}) for every row of a source.
    ``taken`` maps source names already in use to their paths: a second file with the same name
    (train/rubrics.jsonl and bench/rubrics.jsonl) is named by its parent folder too."""
    taken = {} if taken is None else taken
    for name, label, factory in expand_source(spec):
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
                rid = f"{name}:{'h' + content_hash(rec['messages']) if hashed else rec['original_id']}"
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

    Every source is checked before anything is written (a missing path is a ValueError naming it).
    Returns {"sources": [per-source counts], "added", "already", "rejected", "problems": ["PATH:ROW: reason"]}."""
    for spec in sources:
        expand_source(spec)  # fail early, before writing anything
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = data_dir(workspace)
    schema = instructions_schema()
    path = d / "instructions.parquet"
    existing = pq.read_table(path) if path.is_file() else schema.empty_table()
    light = existing.select(["id", "source", "path"]).to_pylist()  # the heavy columns stay in Arrow
    known = {r["id"] for r in light}
    taken = {r["source"]: r["path"] for r in light}
    rejects = {(r["source"], r["row"]): r for r in read_rejects(workspace)}
    new_rows: list[dict] = []
    batches = [existing]
    added = 0
    per_source, problems = [], []
    for spec in sources:
        counts = Counter()
        reasons = Counter()
        for rec, bad in iter_rows(spec, columns, max_chars, taken):
            counts["rows"] += 1
            if bad is not None:
                counts["rejected"] += 1
                reasons[reason_kind(bad["reason"])] += 1
                problems.append(f"{bad['source']}:{bad['row']}: {bad['reason']}")
                rejects[(bad["source"], bad["row"])] = bad
            elif rec["id"] in known:
                counts["already"] += 1
            else:
                known.add(rec["id"])
                new_rows.append(rec)
                counts["added"] += 1
                if len(new_rows) >= 10_000:  # bound the Python objects held: move them into Arrow
                    batches.append(pa.Table.from_pylist(new_rows, schema=schema))
                    added, new_rows = added + len(new_rows), []
        per_source.append({"source": spec, "rows": counts["rows"], "added": counts["added"],
                           "already": counts["already"], "rejected": counts["rejected"], "reasons": dict(reasons)})
    batches.append(pa.Table.from_pylist(new_rows, schema=schema))
    added += len(new_rows)
    table = pa.concat_tables(batches)
    write_table(path, table)
    write_jsonl(d / "rejects.jsonl", list(rejects.values()))
    log_path = d / "sources.json"
    log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else []
    write_json(log_path, log + per_source)
    return {"sources": per_source, "added": added, "already": sum(s["already"] for s in per_source),
            "rejected": sum(s["rejected"] for s in per_source), "total": table.num_rows,
            "problems": problems}

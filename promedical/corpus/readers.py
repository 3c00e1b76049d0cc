"""Reading a corpus source: files (.jsonl .json .csv .parquet), folders of them, saved `datasets`
folders and hub ids, row by row with bounded reads.

One rule for JSON: ``.json`` files are parsed as strictly as JSONL (``promedical.core.jsonl.loads``: no
duplicate keys, no NaN/Infinity). CSV records (a quoted field may span lines) are cut out before the
``csv`` module parses them, at most ``CSV_RECORD_FACTOR`` x the field limit characters each: a longer
record, a quoted field that never closes included, is one reject and its lines never become rows, and
a huge one-line file is read in bounded pieces. Parquet page checksums are verified where the file has
them (the kit writes them).
"""
from __future__ import annotations

import csv
from pathlib import Path

from promedical.core.jsonl import iter_jsonl, loads

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


MAX_JSON_BYTES = 1 << 30  # a .json file is read whole: refuse one over 1 GiB (use JSONL or Parquet)


# ----------------------------------------------------------------------------------------------
# Reading sources: yield (row number, record or None, error or None)
# ----------------------------------------------------------------------------------------------
def _iter_json(path: Path):
    if path.stat().st_size > MAX_JSON_BYTES:
        yield 0, None, f"file is over {MAX_JSON_BYTES} bytes; use JSONL or Parquet"
        return
    try:
        obj = loads(path.read_bytes().decode("utf-8"))
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


CSV_RECORD_FACTOR = 4      # a CSV record may hold at most this many field limits of characters


_CSV_PIECE = 1 << 20       # characters read at a time while skipping an over-long record

_START, _FIELD, _QUOTED, _QUOTE = range(4)  # the csv module's parser states (default dialect, not strict)


def _csv_scan(piece: str, state: int) -> int:
    """The csv parser's state after ``piece`` (part of one physical line), so a record's end is known
    without parsing it: a line ends the record unless it ends inside a quoted field."""
    i, n = 0, len(piece)
    while i < n:
        if state == _QUOTED:
            j = piece.find('"', i)
            if j < 0:
                return state
            state, i = _QUOTE, j + 1
        elif state == _FIELD:
            j = piece.find(",", i)
            if j < 0:
                return state
            state, i = _START, j + 1
        else:  # at the start of a field, or just after a quote inside a quoted field
            c = piece[i]
            if c == '"':
                state = _QUOTED  # opens a quoted field, or is the second of a doubled quote
            elif c == ",":
                state = _START
            elif c not in "\r\n":
                state = _FIELD
            i += 1
    return state


def _csv_records(fh, cap: int):
    """(physical lines of one record, or None when it is over ``cap`` characters, or "open" for a last
    record whose quoted field never closes) until the end of fh; at most ``cap`` + one piece of
    characters are held at a time."""
    while True:
        lines, size, state, over = [], 0, _START, False
        while True:
            piece = fh.readline(_CSV_PIECE if over else cap - size + 1)
            if not piece:
                if lines or over:
                    yield None if over else "open" if state == _QUOTED else lines
                return
            size += len(piece)
            state = _csv_scan(piece, state)
            if not over:
                if size > cap:
                    over, lines = True, []
                else:
                    lines.append(piece)
            if piece[-1] in "\r\n" and state != _QUOTED:
                break
        yield None if over else lines


def _iter_csv(path: Path, max_field: int):
    limit = max(max_field, 131072)
    csv.field_size_limit(limit)
    cap = CSV_RECORD_FACTOR * limit
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        records = _csv_records(fh, cap)
        lines = next(records, [])
        if lines is None or lines == "open":
            yield 0, None, ("unreadable CSV header: " + (f"over {cap} characters" if lines is None
                                                          else "a quoted field does not close before the end of the file"))
            return
        if not lines:
            return
        try:
            header = next(csv.reader(lines))
        except csv.Error as exc:
            yield 0, None, f"unreadable CSV header: {exc}"
            return
        header = [h.strip().lstrip("\ufeff") for h in header]
        for row, lines in enumerate(records, start=1):
            if lines is None:
                yield row, None, f"unreadable CSV row: over {cap} characters (a quoted field that does not close?)"
                continue
            if lines == "open":
                yield row, None, "unreadable CSV row: a quoted field does not close before the end of the file"
                continue
            try:
                fields_ = next(csv.reader(lines), [])
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
    pf = pq.ParquetFile(path, page_checksum_verification=True)  # a flipped bit is an error, not other text
    for batch in pf.iter_batches(batch_size=4096):
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


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def expand_source(spec: str, exclude: Path | None = None) -> list[tuple[str, str, object]]:
    """One source spec -> [(source name, path label, row iterator factory)]. Raises ValueError on a
    source that cannot be read at all (missing path, unsupported type).

    ``exclude`` is the workspace being written: its step-00 tables (``data/``) are never a source, and a
    folder that holds the workspace is read without it (its rows would be ingested into themselves)."""
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
    skip = None
    if exclude is not None:
        exclude, real = Path(exclude).resolve(), path.resolve()
        if _inside(real, exclude / "data"):
            raise ValueError(f"{spec}: is the workspace's own step-00 data ({exclude / 'data'}); "
                             f"ingest reads sources from outside it")
        skip = exclude / "data" if _inside(real, exclude) else exclude
    if is_saved_dataset(path):
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        parts = list(ds.items()) if isinstance(ds, DatasetDict) else [(None, ds)]
        return [(path.name if split is None else f"{path.name}/{split}", spec if split is None else f"{spec}[{split}]",
                 lambda max_chars, d=d: _iter_dataset(d)) for split, d in parts]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES
                       and not (skip is not None and _inside(p.resolve(), skip)))
        if not files:
            raise ValueError(f"{spec}: folder holds no {', '.join(FILE_SUFFIXES)} files"
                             + (f" outside the workspace {skip}" if skip is not None and _inside(skip, path.resolve())
                                else ""))
        return [(f"{path.name}/{f.relative_to(path).with_suffix('').as_posix()}", str(f),
                 lambda max_chars, f=f: iter_file(f, max_chars)) for f in files]
    if not path.is_file():
        raise ValueError(f"{spec}: not a regular file")
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise ValueError(f"{spec}: unsupported file type {path.suffix!r} (expected {', '.join(FILE_SUFFIXES)})")
    return [(path.stem, spec, lambda max_chars, p=path: iter_file(p, max_chars))]

"""Reading a corpus source: files (.jsonl .json .csv .parquet), folders of them, saved `datasets`
folders and hub ids, row by row with bounded reads."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from promedical.core.jsonl import iter_jsonl

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

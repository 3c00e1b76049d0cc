"""Strict JSON and JSONL reading: bounded lines, no NaN/Infinity, no duplicate keys, numbers in range."""
from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Iterator

from promedical.core.ids import quote
from promedical.core.rubric import _FLOAT_MAX

MAX_LINE_BYTES = 8 * 1024 * 1024  # a single record larger than this is refused, not parsed


# ----------------------------------------------------------------------------------------------
# JSONL reading
# ----------------------------------------------------------------------------------------------
def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line_number, object, error) for each non-blank line; object is None on error.

    Reads are bounded: at most MAX_LINE_BYTES + 1 bytes of a line are held in memory (a longer line
    is measured and skipped), and a device or socket is refused (OSError) before anything is read.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise OSError(errno.EINVAL, "not a regular file or a pipe")
        number = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                size = len(raw)
                while not raw.endswith(b"\n"):
                    raw = fh.readline(1 << 20)
                    if not raw:
                        break
                    size += len(raw)
                yield number, None, f"line is {size} bytes, over the {MAX_LINE_BYTES}-byte limit"
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, f"not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})"
                continue
            if not text.strip():
                continue
            try:
                yield number, loads(text), None
            except (ValueError, RecursionError) as exc:
                yield number, None, f"malformed JSON: {exc}"


def loads(text: str | bytes) -> Any:
    """Strict JSON: NaN/Infinity, numbers beyond the float range (1e999) and objects with a repeated
    key are errors (ValueError), because
    "the last value wins" would let a second ``"tier"`` silently turn a veto into a bonus."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_float_range_int,
                      object_pairs_hook=_unique_keys)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _float_range_int(text: str) -> int:
    value = int(text)
    if abs(value) > _FLOAT_MAX:
        raise ValueError(f"number {text[:40]}... is out of the float range")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of the float range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {quote(dup)} in one object")
    return out

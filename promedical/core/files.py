"""Atomic, append-only and JSONL file helpers: every artefact the kit writes goes through here."""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


class OutputError(OSError):
    """An output path the kit refuses to write: not a regular file, a directory, or an unmakeable folder."""


def output_target(path: str | Path) -> tuple[Path, os.stat_result | None]:
    """The file a write to ``path`` replaces (a symlink is followed to its target) and its stat, or
    None when nothing is there yet. Raises OutputError for anything that is not a regular file."""
    path = Path(path)
    if path.is_symlink():
        try:
            path = path.resolve(strict=False)
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise OutputError(f"{path}: cannot write: {exc}") from None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path, None
    except NotADirectoryError:
        raise OutputError(f"{path}: cannot create its folder {path.parent}: a file is in the way") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: cannot write: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: cannot write: not a regular file (a FIFO, socket or device is never replaced)")
    return path, st


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create its folder {path.parent}: {exc.strerror or exc}") from None
    if not path.parent.is_dir():
        raise OutputError(f"{path}: cannot create its folder {path.parent}: not a directory")


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write text to path so that readers see the old file or the new one, never a mix.

    Only a regular file (or nothing) is replaced; an existing file keeps its permission bits and a new
    one gets 0666 minus the umask (0644 typically), like any other tool's output. ``mode`` (e.g.
    0o600 for a file only its owner may read) is the file's mode from its creation on, old or new.
    """
    path, existing = output_target(path)
    _make_parent(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        # O_EXCL: never follow or reuse anything at the temporary name; the kernel applies the umask
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {path.parent}: {exc.strerror or exc}") from None
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        elif existing is not None:
            os.fchmod(fd, stat.S_IMODE(existing.st_mode))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dumps_line(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Atomically replace path with one JSON object per line."""
    return atomic_write_text(path, "".join(dumps_line(r) for r in records))


def write_json(path: str | Path, obj, mode: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False) + "\n", mode)


@contextmanager
def locked(path: str | Path, timeout: float | None = None) -> Iterator[None]:
    """An exclusive advisory lock on ``path + '.lock'`` (between processes and threads). With
    ``timeout`` (seconds) it waits at most that long, then raises TimeoutError naming the lock."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        if timeout is None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"{lock}: another writer held it for over {timeout:g} s") from None
                    time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one record durably. One write() of one whole line, fsynced, under a lock.

    If an earlier writer died mid-line, the torn tail is closed with a newline first, so the
    new record always starts on its own line (readers report the torn line and skip it).
    """
    path, _ = output_target(path)
    _make_parent(path)
    line = dumps_line(record).encode("utf-8")
    with locked(path):
        # O_NONBLOCK: a FIFO swapped in after the check fails here instead of blocking; refused below
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OutputError(f"{path}: cannot append: not a regular file")
        try:
            size = os.fstat(fd).st_size
            if size:
                with open(path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file the kit wrote; raise ValueError naming file and line on a bad line."""
    from promedical.core.jsonl import iter_jsonl

    out = []
    for line, obj, err in iter_jsonl(path):
        if err:
            raise ValueError(f"{path}:{line}: {err}")
        out.append(obj)
    return out

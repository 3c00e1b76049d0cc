"""Append-only revision store for rubrics, in SQLite: every save is a new revision, nothing is overwritten.

The store is one file, ``root/revisions.sqlite`` (stdlib ``sqlite3``, WAL journal), with

- ``revisions``: one row per revision — ``rubric_id, revision, timestamp, author, action, status,
  reason, changes`` (the field-level diff, JSON) and ``rubric`` (the full rubric, JSON); ``seq`` is
  the global order of saves. ``(rubric_id, revision)`` is unique, revisions of a rubric are numbered
  1, 2, 3 … with no gap, and triggers refuse every UPDATE and DELETE: the history is append-only.
- ``latest``: rubric id → its latest revision (maintained by a trigger in the same transaction), so
  the current view, a status count or one rubric is an indexed read that never parses the history.

Several writers (reviewers in several kernels, batch jobs) share a store safely. A save runs in
``BEGIN IMMEDIATE``: the revision number is taken inside the write transaction. A save names the
revision it was based on (``base_revision``; 0 for a new rubric); when another save came first the
save is refused with :class:`StaleRevisionError`, which says who saved what and when — nothing is
written and the caller keeps its text (the review session keeps it in its autosave).

``export_history`` writes the whole history as JSONL, one revision per line in the format of the
previous store (``revisions.jsonl``)::

    {"rubric_id", "revision", "timestamp", "author", "action", "status", "reason",
     "changes": [{"op", "criterion", "field", "old", "new"}], "rubric": {...full rubric...}}

A store that still holds only that JSONL log is migrated the first time it is opened: every
readable revision is copied in log order (unreadable lines are skipped with a warning naming them;
revision numbers that concurrent writers of the old store duplicated are renumbered in log order,
with a warning), then the log is renamed ``revisions.jsonl.migrated``. Putting an exported history
at ``root/revisions.jsonl`` of an empty folder restores a store from it the same way.
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from promedical.core.files import locked, write_jsonl
from promedical.core.jsonl import iter_jsonl
from promedical.core.rubric import Problem, Rubric, RubricError, _build_rubric, rubric_problems
from promedical.core.workspace import Workspace

STATUSES = ("draft", "in_review", "approved", "rejected")


DB_NAME = "revisions.sqlite"


LEGACY_LOG = "revisions.jsonl"


SCHEMA_VERSION = "1"


BUSY_TIMEOUT_S = 60.0      # how long a writer waits for another writer's transaction before failing


IMPORT_CHUNK = 1000        # rubrics per write transaction in import_rubrics (other writers interleave)


SQL_VARIABLES = 500        # ids per "IN (...)" query


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revisions (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    rubric_id TEXT NOT NULL,
    revision  INTEGER NOT NULL CHECK (revision >= 1),
    timestamp TEXT NOT NULL,
    author    TEXT NOT NULL,
    action    TEXT NOT NULL,
    status    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    changes   TEXT NOT NULL,
    rubric    TEXT NOT NULL,
    UNIQUE (rubric_id, revision)
);
CREATE TABLE IF NOT EXISTS latest (
    rubric_id TEXT PRIMARY KEY,
    seq       INTEGER NOT NULL,
    revision  INTEGER NOT NULL,
    status    TEXT NOT NULL,
    first_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS latest_order ON latest (first_seq);
CREATE INDEX IF NOT EXISTS latest_status ON latest (status, first_seq);
CREATE TRIGGER IF NOT EXISTS revisions_numbered BEFORE INSERT ON revisions
WHEN NEW.revision != COALESCE((SELECT revision FROM latest WHERE rubric_id = NEW.rubric_id), 0) + 1
BEGIN SELECT RAISE(ABORT, 'revision numbers of a rubric must be consecutive'); END;
CREATE TRIGGER IF NOT EXISTS revisions_latest AFTER INSERT ON revisions
BEGIN
    INSERT INTO latest (rubric_id, seq, revision, status, first_seq)
    VALUES (NEW.rubric_id, NEW.seq, NEW.revision, NEW.status, NEW.seq)
    ON CONFLICT (rubric_id) DO UPDATE SET seq = excluded.seq, revision = excluded.revision,
                                          status = excluded.status;
END;
CREATE TRIGGER IF NOT EXISTS revisions_no_update BEFORE UPDATE ON revisions
BEGIN SELECT RAISE(ABORT, 'the revision history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS revisions_no_delete BEFORE DELETE ON revisions
BEGIN SELECT RAISE(ABORT, 'the revision history is append-only'); END;
"""


COLUMNS = "rubric_id, revision, timestamp, author, action, status, reason, changes, rubric"


INSERT = f"INSERT INTO revisions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


LATEST = f"SELECT {', '.join('r.' + c for c in COLUMNS.split(', '))} FROM latest l JOIN revisions r ON r.seq = l.seq"


class StoreError(ValueError):
    """The store cannot be opened or used (not a store, a non-regular file, …); one-line message."""


class StaleRevisionError(StoreError):
    """A save based on a revision that is no longer the latest: refused, nothing written.

    ``rubric_id``, ``base_revision`` (what the save was based on), ``current`` (the latest
    :class:`Revision`, None when the rubric does not exist) and ``kept`` (where the caller kept the
    refused text, if it says) tell the whole story; ``str()`` says it in one paragraph.
    """

    def __init__(self, rubric_id: str, base_revision: int, current: "Revision | None", kept: str | None = None):
        self.rubric_id, self.base_revision, self.current, self.kept = rubric_id, base_revision, current, kept
        if current is None:
            why = f"it was based on revision {base_revision} but the store holds no rubric {rubric_id!r}"
        elif base_revision == 0:
            why = (f"it would create rubric {rubric_id!r}, which already exists "
                   f"(revision {current.revision} by {current.author} at {current.timestamp})")
        else:
            why = (f"it was based on revision {base_revision}, but revision {current.revision} "
                   f"({current.status}) was saved by {current.author} at {current.timestamp}")
        text = (f"stale revision: save of rubric {rubric_id!r} refused because {why}; "
                f"nothing was written, so their changes are not undone.")
        text += (f" Your edits are kept in {kept}: look at the latest revision, then save on top of it or discard them."
                 if kept else " Re-read the latest revision and apply your change to it.")
        super().__init__(text)

    def __reduce__(self):  # survives pickling (multiprocessing hands exceptions between processes)
        return type(self), (self.rubric_id, self.base_revision, self.current, self.kept)


@dataclass(frozen=True)
class Revision:
    rubric_id: str
    revision: int
    timestamp: str
    author: str
    action: str
    status: str
    reason: str
    changes: list
    rubric: Rubric

    def to_dict(self) -> dict:
        return {"rubric_id": self.rubric_id, "revision": self.revision, "timestamp": self.timestamp,
                "author": self.author, "action": self.action, "status": self.status,
                "reason": self.reason, "changes": self.changes, "rubric": self.rubric.to_dict()}


def diff_rubrics(old: Rubric | None, new: Rubric) -> list[dict]:
    """Field-level changes between two versions of a rubric (criteria matched by id)."""
    if old is None:
        return [{"op": "create", "criterion": None, "field": None, "old": None, "new": len(new.criteria)}]
    changes = []
    for key in ("instruction", "category", "specialty"):
        if getattr(old, key) != getattr(new, key):
            changes.append({"op": "change", "criterion": None, "field": key,
                            "old": getattr(old, key), "new": getattr(new, key)})
    before = {c.id: c.to_dict() for c in old.criteria}
    after = {c.id: c.to_dict() for c in new.criteria}
    for cid in before.keys() - after.keys():
        changes.append({"op": "remove", "criterion": cid, "field": None, "old": before[cid], "new": None})
    for cid, c in after.items():
        if cid not in before:
            changes.append({"op": "add", "criterion": cid, "field": None, "old": None, "new": c})
            continue
        for field in sorted(before[cid].keys() | c.keys()):
            if before[cid].get(field) != c.get(field):
                changes.append({"op": "change", "criterion": cid, "field": field,
                                "old": before[cid].get(field), "new": c.get(field)})
    return changes


_INHERITED: list = []  # connections a forked child inherited from its parent


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def _row(row) -> Revision:
    """A stored row as a Revision (the rubric was validated when it was saved: built, not re-validated)."""
    rid, revision, ts, author, action, status, reason, changes, rubric = row
    return Revision(rubric_id=rid, revision=revision, timestamp=ts, author=author, action=action,
                    status=status, reason=reason, changes=json.loads(changes),
                    rubric=_build_rubric(json.loads(rubric)))


def _busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock (not a sign of a broken file)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class RubricStore:
    """Revision store in ``root/revisions.sqlite``; safe for several writers (processes, threads)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / DB_NAME
        self._conn: sqlite3.Connection | None = None
        self._pid = None
        self._lock = threading.RLock()

    @property
    def autosave_dir(self) -> Path:
        """Where review sessions keep their unsaved edits (``review.session``, ``review.queues``)."""
        return self.root / "autosave"

    # -- connection --------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            if self._conn is not None:  # inherited through fork: never used nor closed here (SQLite's rule)
                _INHERITED.append(self._conn)
            self._conn, self._pid = self._open(), os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the store folder ({exc.strerror or exc})") from None
        legacy = self.root / LEGACY_LOG
        if not self.path.exists() and legacy.exists():
            if not legacy.is_file():
                raise StoreError(f"{legacy}: not a regular file, cannot migrate it")
            try:
                with locked(self.path, timeout=BUSY_TIMEOUT_S):
                    if not self.path.exists():
                        self._migrate(legacy)
            except TimeoutError:
                raise StoreError(f"{self.path}: busy: another process held the store for over {BUSY_TIMEOUT_S:g} s "
                                 f"while migrating it; try again") from None
        if self.path.exists() and not stat.S_ISREG(os.stat(self.path).st_mode):
            raise StoreError(f"{self.path}: not a regular file, cannot hold a rubric store")
        db = None
        try:
            # Openers take turns (a file lock, waited for at most BUSY_TIMEOUT_S): switching a new file to
            # WAL and creating the schema are writes SQLite may refuse at once, without its busy handler,
            # while another connection does the same. Writers saving meanwhile wait in SQLite's handler.
            with locked(self.path, timeout=BUSY_TIMEOUT_S):
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
                db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"{self.path}: SQLite cannot use its WAL journal here (got {mode!r})")
                db.execute("PRAGMA synchronous=FULL")  # a save that returned survives a crash
                if db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
                              "AND name = 'revisions_no_delete'").fetchone()[0] == 0:
                    db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} INSERT OR IGNORE INTO meta "
                                     f"VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
        except TimeoutError:
            raise StoreError(f"{self.path}: busy: another process held the store for over {BUSY_TIMEOUT_S:g} s "
                             f"while opening it; try again") from None
        except sqlite3.OperationalError as exc:
            if db is not None:
                db.close()
            if _busy(exc):
                raise StoreError(f"{self.path}: busy: another writer held the store for over {BUSY_TIMEOUT_S:g} s "
                                 f"({exc}); try again") from None
            raise StoreError(f"{self.path}: not a rubric store ({exc})") from None
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            raise StoreError(f"{self.path}: not a rubric store ({exc})") from None
        except BaseException:
            if db is not None:
                db.close()
            raise
        if legacy.exists():
            warnings.warn(f"{legacy} is not read: this store lives in {self.path} "
                          f"(export_history() writes the history as JSONL)")
        return db

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE): no other writer between read and insert."""
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _read(self, sql: str, params: Iterable = ()) -> list:
        with self._lock:
            return self._db().execute(sql, tuple(params)).fetchall()

    # -- migration from the JSONL log --------------------------------------------------------------
    def _migrate(self, legacy: Path) -> None:
        """Copy the JSONL log into a new database (built aside, then renamed into place)."""
        tmp = self.path.with_name(f".{DB_NAME}.migrating")
        for p in (tmp, Path(f"{tmp}-journal")):
            p.unlink(missing_ok=True)
        skipped, renumbered, rows, counts = [], 0, [], {}
        for line, obj, err in iter_jsonl(legacy):
            if err is None:
                try:
                    rev = Revision(**{**obj, "rubric": Rubric.from_dict(obj["rubric"])})
                    if not isinstance(rev.rubric_id, str) or rev.rubric_id != rev.rubric.id:
                        raise ValueError("rubric_id does not match the rubric's id")
                    for key in ("timestamp", "author", "action", "status", "reason"):
                        if not isinstance(getattr(rev, key), str):
                            raise ValueError(f"{key} must be a string")
                    if not isinstance(rev.changes, list):
                        raise ValueError("changes must be a list")
                except (TypeError, KeyError, ValueError) as exc:
                    err = f"not a revision record ({str(exc).splitlines()[0]})"
            if err is not None:
                skipped.append(f"{legacy}:{line}: {err}")
                continue
            n = counts[rev.rubric_id] = counts.get(rev.rubric_id, 0) + 1
            renumbered += rev.revision != n
            rows.append((rev.rubric_id, n, rev.timestamp, rev.author, rev.action, rev.status, rev.reason,
                         _dumps(rev.changes), _dumps(rev.rubric.to_dict())))
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.executescript(SCHEMA)
            db.execute("BEGIN")
            db.executemany(INSERT, rows)
            db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", SCHEMA_VERSION), ("migrated_from", str(legacy)), ("migrated_at", _now()),
                ("migrated_revisions", str(len(rows))), ("migrated_skipped_lines", str(len(skipped))),
                ("migrated_renumbered", str(renumbered))])
            db.execute("COMMIT")
        finally:
            db.close()
        os.replace(tmp, self.path)
        os.replace(legacy, legacy.with_name(LEGACY_LOG + ".migrated"))
        if skipped:
            shown = "; ".join(skipped[:5]) + (f"; … {len(skipped) - 5} more" if len(skipped) > 5 else "")
            warnings.warn(f"migrating {legacy}: skipped {len(skipped)} unreadable revision line(s): {shown}")
        if renumbered:
            warnings.warn(f"migrating {legacy}: {renumbered} revision number(s) renumbered in log order "
                          "(the old store let concurrent writers take the same number)")

    # -- writes ------------------------------------------------------------------------------------
    def _check(self, rubric: Rubric, author: str, status: str) -> None:
        problems = rubric_problems(rubric.to_dict())
        if problems:
            raise RubricError([Problem(str(self.path), 0, p, m) for p, m in problems])
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if not isinstance(author, str) or not author.strip():
            raise ValueError("author must be a non-empty name")

    def _latest_in(self, db: sqlite3.Connection, rubric_id: str) -> Revision | None:
        row = db.execute(LATEST + " WHERE l.rubric_id = ?", (rubric_id,)).fetchone()
        return _row(row) if row else None

    def _save_in(self, db, rubric: Rubric, author: str, action: str, status: str, reason: str,
                 base_revision: int | None) -> Revision:
        previous = self._latest_in(db, rubric.id)
        number = previous.revision if previous else 0
        if base_revision is not None and base_revision != number:
            raise StaleRevisionError(rubric.id, base_revision, previous)
        rev = Revision(rubric_id=rubric.id, revision=number + 1, timestamp=_now(), author=author,
                       action=action, status=status, reason=reason,
                       changes=diff_rubrics(previous.rubric if previous else None, rubric), rubric=rubric)
        db.execute(INSERT, (rev.rubric_id, rev.revision, rev.timestamp, rev.author, rev.action, rev.status,
                            rev.reason, _dumps(rev.changes), _dumps(rubric.to_dict())))
        return rev

    def save(self, rubric: Rubric, *, author: str, action: str = "edit", status: str = "draft",
             reason: str = "", base_revision: int | None = None) -> Revision:
        """Validate and append a new revision of ``rubric``; raises RubricError if invalid.

        ``base_revision`` is the revision the new version was made from (0: a new rubric). When the
        latest revision is another one, the save is refused with StaleRevisionError and nothing is
        written. ``None`` saves on top of whatever is latest (scripts that own the rubric; every
        review path passes its base).
        """
        self._check(rubric, author, status)
        with self._write() as db:
            return self._save_in(db, rubric, author, action, status, reason, base_revision)

    def save_many(self, items: list[dict]) -> list[Revision]:
        """Save several revisions in ONE transaction: all are written, or none (on any error).

        Each item holds the keyword arguments of :meth:`save` plus ``rubric``; items on one rubric
        apply in order (the second is based on the revision the first creates).
        """
        for it in items:
            self._check(it["rubric"], it["author"], it.get("status", "draft"))
        with self._write() as db:
            return [self._save_in(db, it["rubric"], it["author"], it.get("action", "edit"),
                                  it.get("status", "draft"), it.get("reason", ""), it.get("base_revision"))
                    for it in items]

    def import_rubrics(self, rubrics: list[Rubric], *, author: str, reason: str = "") -> int:
        """Add rubrics that the store does not hold yet (as drafts); returns how many were added.

        Every rubric is validated first (RubricError listing every problem, nothing written). A
        rubric id seen earlier in the list is skipped. Writes go in transactions of IMPORT_CHUNK
        rubrics, each checking which ids exist inside the transaction.
        """
        problems, fresh, seen = [], [], set()
        for i, r in enumerate(rubrics):
            found = rubric_problems(r.to_dict())
            problems += [Problem(f"<import {i}: {r.id!r}>", 0, p, m) for p, m in found]
            if not found and r.id not in seen:
                seen.add(r.id)
                fresh.append(r)
        if problems:
            raise RubricError(problems)
        if not isinstance(author, str) or not author.strip():
            raise ValueError("author must be a non-empty name")
        added = 0
        for chunk in _chunks(fresh, IMPORT_CHUNK):
            with self._write() as db:
                known = set()
                for part in _chunks([r.id for r in chunk], SQL_VARIABLES):
                    marks = ",".join("?" * len(part))
                    known.update(x for (x,) in db.execute(f"SELECT rubric_id FROM latest WHERE rubric_id IN ({marks})", part))
                ts = _now()
                new = [(r.id, 1, ts, author, "create", "draft", reason,
                        _dumps(diff_rubrics(None, r)), _dumps(r.to_dict())) for r in chunk if r.id not in known]
                db.executemany(INSERT, new)
                added += len(new)
        return added

    # -- reads -------------------------------------------------------------------------------------
    def latest(self, rubric_id: str) -> Revision | None:
        """The latest revision of one rubric (one indexed read), or None when there is none."""
        with self._lock:
            return self._latest_in(self._db(), rubric_id)

    def get(self, rubric_id: str, revision: int) -> Revision | None:
        """One revision of one rubric, or None."""
        rows = self._read(f"SELECT {COLUMNS} FROM revisions WHERE rubric_id = ? AND revision = ?",
                          (rubric_id, revision))
        return _row(rows[0]) if rows else None

    def ids(self, status: str | None = None) -> list[str]:
        """Rubric ids in first-saved order (optionally only those whose latest status is ``status``)."""
        if status is None:
            return [x for (x,) in self._read("SELECT rubric_id FROM latest ORDER BY first_seq")]
        return [x for (x,) in self._read("SELECT rubric_id FROM latest WHERE status = ? ORDER BY first_seq", (status,))]

    def statuses(self, ids: Iterable[str] | None = None) -> dict[str, str]:
        """Rubric id -> latest status (of ``ids`` when given; unknown ids are left out)."""
        if ids is None:
            return dict(self._read("SELECT rubric_id, status FROM latest ORDER BY first_seq"))
        wanted = list(dict.fromkeys(ids))
        if len(wanted) > 20 * SQL_VARIABLES:  # a large queue: one pass over the index is cheaper
            every = self.statuses()
            return {rid: every[rid] for rid in wanted if rid in every}
        out: dict[str, str] = {}
        for part in _chunks(wanted, SQL_VARIABLES):
            marks = ",".join("?" * len(part))
            out.update(self._read(f"SELECT rubric_id, status FROM latest WHERE rubric_id IN ({marks})", part))
        return out

    def status_counts(self) -> dict[str, int]:
        return dict(self._read("SELECT status, COUNT(*) FROM latest GROUP BY status"))

    def __len__(self) -> int:
        """How many rubrics the store holds."""
        return self._read("SELECT COUNT(*) FROM latest")[0][0]

    def revision_count(self) -> int:
        return self._read("SELECT COUNT(*) FROM revisions")[0][0]

    def current(self, ids: Iterable[str] | None = None) -> dict[str, Revision]:
        """Latest revision per rubric id (of ``ids`` when given), in first-saved order."""
        if ids is None:
            return {r.rubric_id: r for r in map(_row, self._read(LATEST + " ORDER BY l.first_seq"))}
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Revision] = {}
        for part in _chunks(wanted, SQL_VARIABLES):
            marks = ",".join("?" * len(part))
            found.update((r.rubric_id, r) for r in map(_row, self._read(LATEST + f" WHERE l.rubric_id IN ({marks})", part)))
        return {rid: found[rid] for rid in wanted if rid in found}

    def history(self, rubric_id: str) -> list[Revision]:
        """Every revision of one rubric, oldest first (an indexed read)."""
        return [_row(r) for r in self._read(f"SELECT {COLUMNS} FROM revisions WHERE rubric_id = ? ORDER BY revision",
                                            (rubric_id,))]

    def iter_revisions(self, batch: int = 1000) -> Iterator[Revision]:
        """Every revision in save order, read in batches (bounded memory)."""
        last = 0
        while True:
            rows = self._read(f"SELECT seq, {COLUMNS} FROM revisions WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch))
            if not rows:
                return
            last = rows[-1][0]
            yield from (_row(r[1:]) for r in rows)

    def revisions(self) -> list[Revision]:
        """Every revision in save order."""
        return list(self.iter_revisions())

    def rubrics(self, status: str | None = None) -> list[Rubric]:
        if status is None:
            rows = self._read(LATEST + " ORDER BY l.first_seq")
        else:
            rows = self._read(LATEST + " WHERE l.status = ? ORDER BY l.first_seq", (status,))
        return [_row(r).rubric for r in rows]

    def export(self, path: str | Path, status: str | None = None) -> Path:
        """Write the current rubrics (optionally only one status) as a kit rubric JSONL."""
        return write_jsonl(path, [r.to_dict() for r in self.rubrics(status)])

    def export_history(self, path: str | Path) -> Path:
        """Write every revision, in save order, as JSONL (the previous store's ``revisions.jsonl`` format)."""
        return write_jsonl(path, (r.to_dict() for r in self.iter_revisions()))


def open_store(workspace=None) -> RubricStore:
    """The workspace's revision store (``Workspace.rubrics``)."""
    return RubricStore(Workspace.of(workspace).rubrics)

"""Team review records beside the revision store: rounds, assignments, blind reviews, adjudications.

One SQLite file, ``store.root/team.sqlite`` (WAL, like the revision store), append-only for what
people decided (triggers refuse UPDATE and DELETE of reviews and adjudications):

- ``rounds``: round number, when it opened, the rubric ids drafted in it and the ids of the
  few-shot pool they were drafted with;
- ``assignments``: (round, rubric, reviewer) with the draft revision the reviewer starts from and
  whether the rubric is double-reviewed (blind);
- ``reviews``: one submitted review per (round, rubric, reviewer): the reviewer's decision, comment,
  the full reviewed rubric and its field-level diff against the draft. A review is NOT a revision
  of the store: the store's latest revision stays the draft until every reviewer of the rubric is
  done, so the second reviewer opens the draft, never the first reviewer's edits;
- ``adjudications``: one per (round, rubric): who resolved a disagreement, what they chose
  (a reviewer's review, or ``merge``), why, and the store revision that it wrote.

The store's history keeps the decision (a revision whose reason names both reviews); this file
keeps both blind reviews, so nothing of either reviewer is lost. It holds blind reviews before
adjudication, so it is created 0600 (its WAL and shared-memory files take the same mode) and an
existing one is tightened to 0600 when opened.

Reviewer names: :func:`clean_name` is how a name is stored (NFKC, invisible and format characters
removed, whitespace collapsed); :func:`reviewer_key` is who a name is (the clean name case-folded):
``Ana``, ``ana`` + U+200B and fullwidth ``ａｎａ`` are one person. Every comparison of identities
(assignments, reviews, "an adjudicator is not a reviewer", the app's launch identity) goes through
the key, and :meth:`TeamStore.canonical` refuses a name whose key is an existing different spelling.
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from promedical.core.rubric import Rubric, _build_rubric
from promedical.review.names import clean_name, reviewer_key
from promedical.rubrics.integrity import check_database, tables_of
from promedical.rubrics.store import BUSY_TIMEOUT_S, RubricStore, StoreError

DB_NAME = "team.sqlite"


DECISIONS = ("approved", "rejected")


SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, opened TEXT NOT NULL, rubric_ids TEXT NOT NULL, pool_ids TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    round INTEGER NOT NULL REFERENCES rounds(round), rubric_id TEXT NOT NULL, reviewer TEXT NOT NULL,
    base_revision INTEGER NOT NULL, blind INTEGER NOT NULL, assigned TEXT NOT NULL,
    PRIMARY KEY (round, rubric_id, reviewer)
);
CREATE TABLE IF NOT EXISTS reviews (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER NOT NULL, rubric_id TEXT NOT NULL,
    reviewer TEXT NOT NULL, base_revision INTEGER NOT NULL, timestamp TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')), comment TEXT NOT NULL,
    changes TEXT NOT NULL, rubric TEXT NOT NULL,
    UNIQUE (round, rubric_id, reviewer)
);
CREATE TABLE IF NOT EXISTS adjudications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER NOT NULL, rubric_id TEXT NOT NULL,
    adjudicator TEXT NOT NULL, timestamp TEXT NOT NULL, choice TEXT NOT NULL, reason TEXT NOT NULL,
    decision TEXT NOT NULL, revision INTEGER NOT NULL, picks TEXT NOT NULL,
    UNIQUE (round, rubric_id)
);
CREATE TRIGGER IF NOT EXISTS reviews_no_update BEFORE UPDATE ON reviews
BEGIN SELECT RAISE(ABORT, 'submitted reviews are append-only'); END;
CREATE TRIGGER IF NOT EXISTS reviews_no_delete BEFORE DELETE ON reviews
BEGIN SELECT RAISE(ABORT, 'submitted reviews are append-only'); END;
CREATE TRIGGER IF NOT EXISTS adjudications_no_update BEFORE UPDATE ON adjudications
BEGIN SELECT RAISE(ABORT, 'adjudications are append-only'); END;
CREATE TRIGGER IF NOT EXISTS adjudications_no_delete BEFORE DELETE ON adjudications
BEGIN SELECT RAISE(ABORT, 'adjudications are append-only'); END;
"""


class TeamError(ValueError):
    """A team-review action that cannot be done (not assigned, already submitted, …); one line."""


PRIVATE = 0o600  # the team file, its WAL/SHM files, autosaves and summaries: their owner only


def private_file(path: Path) -> None:
    """Create ``path`` 0600 if it is missing (never following a link), or tighten it to 0600."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, PRIVATE)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path}: not a regular file, cannot hold team records")
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            try:
                os.fchmod(fd, PRIVATE)
            except PermissionError:  # another user's file: SQLite still refuses what it cannot do
                pass
    finally:
        os.close(fd)


def _one_line(path: Path, exc: sqlite3.Error) -> StoreError:
    said = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(f"{path}: the team-review file cannot be used ({said})")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Review:
    seq: int
    round: int
    rubric_id: str
    reviewer: str
    base_revision: int
    timestamp: str
    decision: str
    comment: str
    changes: list
    rubric: Rubric

    def to_dict(self) -> dict:
        return {"seq": self.seq, "round": self.round, "rubric_id": self.rubric_id, "reviewer": self.reviewer,
                "base_revision": self.base_revision, "timestamp": self.timestamp, "decision": self.decision,
                "comment": self.comment, "changes": self.changes, "rubric": self.rubric.to_dict()}


@dataclass(frozen=True)
class Assignment:
    round: int
    rubric_id: str
    reviewer: str
    base_revision: int
    blind: bool


@dataclass(frozen=True)
class Adjudication:
    seq: int
    round: int
    rubric_id: str
    adjudicator: str
    timestamp: str
    choice: str
    reason: str
    decision: str
    revision: int
    picks: dict


def _review(row) -> Review:
    seq, rnd, rid, who, base, ts, decision, comment, changes, rubric = row
    return Review(seq, rnd, rid, who, base, ts, decision, comment, json.loads(changes), _build_rubric(json.loads(rubric)))


REVIEW_COLS = "seq, round, rubric_id, reviewer, base_revision, timestamp, decision, comment, changes, rubric"


ADJ_COLS = "seq, round, rubric_id, adjudicator, timestamp, choice, reason, decision, revision, picks"


class TeamStore:
    """Team records of one revision store (``store.root/team.sqlite``)."""

    def __init__(self, store: RubricStore):
        self.store = store
        self.path = store.root / DB_NAME
        self._conn: sqlite3.Connection | None = None
        self._pid = None
        self._lock = threading.RLock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.store.root.mkdir(parents=True, exist_ok=True)
            if self.path.is_symlink() or (self.path.exists() and not stat.S_ISREG(os.stat(self.path).st_mode)):
                raise StoreError(f"{self.path}: not a regular file, cannot hold team records")
            private_file(self.path)
            for side in ("-wal", "-shm"):  # SQLite gives new ones the database's mode; old ones are tightened
                if Path(f"{self.path}{side}").is_file():
                    private_file(Path(f"{self.path}{side}"))
            try:
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
                db.create_function("pm_name_key", 1, reviewer_key, deterministic=True)
                have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                lost = sorted(tables_of(SCHEMA) - have) if have - {"sqlite_sequence"} else []
                if lost:  # a team file that lost a table is damaged: never re-created empty under its records
                    db.close()
                    raise StoreError(f"{self.path}: not a team-review file (no table {', '.join(lost)})")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{self.path}: not a team-review file ({exc})") from None
            self._conn, self._pid = db, os.getpid()
        return self._conn

    def _read(self, sql: str, params=()) -> list:
        with self._lock:
            try:
                return self._db().execute(sql, tuple(params)).fetchall()
            except sqlite3.DatabaseError as exc:  # damaged after opening: one line, never a raw sqlite3 error
                raise _one_line(self.path, exc) from None

    def _transaction(self, body) -> object:
        """``body(db)`` inside BEGIN IMMEDIATE … COMMIT; IntegrityError passes (callers word it), any
        other database error becomes a one-line StoreError."""
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    out = body(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.IntegrityError:
                raise
            except sqlite3.DatabaseError as exc:
                raise _one_line(self.path, exc) from None
            return out

    def _write(self, sql: str, rows: list[tuple]) -> None:
        self._transaction(lambda db: db.executemany(sql, rows))

    def check(self) -> None:
        """StoreError (one line) unless the team file is an intact SQLite file with the team tables."""
        check_database(self.path, SCHEMA, "team-review file")

    # -- names -------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every reviewer and adjudicator name the file holds, as spelled there."""
        return [r[0] for r in self._read("SELECT reviewer FROM assignments UNION SELECT reviewer FROM reviews "
                                         "UNION SELECT adjudicator FROM adjudications ORDER BY 1")]

    def canonical(self, name) -> str:
        """The name as the team spells it: the clean name, refused (TeamError, one line) when it is
        empty or when it is an existing name spelled differently (``ana`` for ``Ana``)."""
        clean = clean_name(name)
        if not clean:
            raise TeamError(f"a reviewer needs a name with visible characters, got {name!r}")
        return self._spelling(clean, self.names(), name)

    @staticmethod
    def _spelling(clean: str, known: list[str], asked) -> str:
        same = sorted({n for n in known if reviewer_key(n) == reviewer_key(clean)})
        if not same or clean in same:
            return clean
        raise TeamError(f"{asked!r} is {same[0]!r} spelled differently: use {same[0]!r} (one person, one spelling)")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- rounds ------------------------------------------------------------------------------------
    def add_round(self, rubric_ids: list[str], pool_ids: list[str], note: str = "") -> int:
        def body(db):
            n = db.execute("SELECT COALESCE(MAX(round), 0) + 1 FROM rounds").fetchone()[0]
            db.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?)",
                       (n, now(), json.dumps(list(rubric_ids)), json.dumps(list(pool_ids)), note))
            return n

        return self._transaction(body)

    def rounds(self) -> list[dict]:
        return [{"round": r, "opened": o, "rubric_ids": json.loads(ids), "pool_ids": json.loads(pool), "note": note}
                for r, o, ids, pool, note in self._read("SELECT * FROM rounds ORDER BY round")]

    def round(self, number: int | None = None) -> dict:
        """One round (the latest when ``number`` is None); TeamError when there is none."""
        every = self.rounds()
        if not every:
            raise TeamError(f"{self.path}: no review round opened yet")
        if number is None:
            return every[-1]
        for r in every:
            if r["round"] == number:
                return r
        raise TeamError(f"no round {number} (rounds: {', '.join(str(r['round']) for r in every)})")

    # -- assignments -------------------------------------------------------------------------------
    def add_assignments(self, rows: list[Assignment]) -> None:
        """Record assignments; a reviewer's name is stored clean and must be spelled as the team already
        spells that person (and one way within ``rows``): TeamError otherwise, nothing written."""
        ts = now()
        spelled: dict[str, str] = {}
        values = []
        for a in rows:
            clean = clean_name(a.reviewer)
            if not clean:
                raise TeamError(f"a reviewer needs a name with visible characters, got {a.reviewer!r}")
            other = spelled.setdefault(reviewer_key(clean), clean)
            if other != clean:
                raise TeamError(f"{a.reviewer!r} and {other!r} are one person spelled two ways: use one spelling")
            values.append((a.round, a.rubric_id, clean, a.base_revision, int(a.blind), ts))

        def body(db):
            known = [r[0] for r in db.execute("SELECT reviewer FROM assignments UNION SELECT reviewer FROM reviews "
                                              "UNION SELECT adjudicator FROM adjudications")]
            for clean in spelled.values():
                self._spelling(clean, known, clean)
            db.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?, ?, ?)", values)

        try:
            self._transaction(body)
        except sqlite3.IntegrityError as exc:
            raise TeamError(f"assignment refused ({exc}): a reviewer is assigned a rubric once per round") from None

    def assignments(self, round: int, rubric_id: str | None = None, reviewer: str | None = None) -> list[Assignment]:
        sql, params = "SELECT round, rubric_id, reviewer, base_revision, blind FROM assignments WHERE round = ?", [round]
        if rubric_id is not None:
            sql, params = sql + " AND rubric_id = ?", params + [rubric_id]
        if reviewer is not None:  # who, not how it is spelled
            sql, params = sql + " AND pm_name_key(reviewer) = ?", params + [reviewer_key(reviewer)]
        return [Assignment(r, rid, who, base, bool(b)) for r, rid, who, base, b in self._read(sql + " ORDER BY rowid", params)]

    # -- reviews -----------------------------------------------------------------------------------
    def add_review(self, round: int, rubric_id: str, reviewer: str, base_revision: int, decision: str,
                   comment: str, changes: list, rubric: Rubric) -> Review:
        if decision not in DECISIONS:
            raise TeamError(f"decision must be one of {DECISIONS}, got {decision!r}")
        key = reviewer_key(reviewer)

        def body(db):
            mine = db.execute("SELECT reviewer FROM assignments WHERE round = ? AND rubric_id = ? AND "
                              "pm_name_key(reviewer) = ?", (round, rubric_id, key)).fetchone()
            if not key or not mine:
                raise TeamError(f"{reviewer!r} is not assigned rubric {rubric_id!r} in round {round}")
            if db.execute("SELECT 1 FROM reviews WHERE round = ? AND rubric_id = ? AND pm_name_key(reviewer) = ?",
                          (round, rubric_id, key)).fetchone():
                raise TeamError(f"{reviewer!r} already submitted a review of {rubric_id!r} in round {round}")
            db.execute(  # stored under the assignment's spelling: one person, one name
                f"INSERT INTO reviews ({REVIEW_COLS[5:]}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (round, rubric_id, mine[0], base_revision, now(), decision, comment,
                 json.dumps(changes, ensure_ascii=False), json.dumps(rubric.to_dict(), ensure_ascii=False)))

        self._transaction(body)
        return self.reviews(round, rubric_id=rubric_id, reviewer=reviewer)[0]

    def reviews(self, round: int | None = None, rubric_id: str | None = None, reviewer: str | None = None) -> list[Review]:
        where, params = [], []
        for col, val in (("round", round), ("rubric_id", rubric_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if reviewer is not None:  # who, not how it is spelled
            where.append("pm_name_key(reviewer) = ?")
            params.append(reviewer_key(reviewer))
        sql = f"SELECT {REVIEW_COLS} FROM reviews" + (" WHERE " + " AND ".join(where) if where else "")
        return [_review(r) for r in self._read(sql + " ORDER BY seq", params)]

    # -- adjudications -----------------------------------------------------------------------------
    def add_adjudication(self, **row) -> None:
        values = (row["round"], row["rubric_id"], clean_name(row["adjudicator"]), now(), row["choice"], row["reason"],
                  row["decision"], row["revision"], json.dumps(row["picks"], ensure_ascii=False))
        try:
            self._write(f"INSERT INTO adjudications ({ADJ_COLS[5:]}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [values])
        except sqlite3.IntegrityError:
            raise TeamError(f"rubric {row['rubric_id']!r} of round {row['round']} is already adjudicated") from None

    def adjudications(self, round: int | None = None, rubric_id: str | None = None) -> list[Adjudication]:
        where, params = [], []
        for col, val in (("round", round), ("rubric_id", rubric_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = f"SELECT {ADJ_COLS} FROM adjudications" + (" WHERE " + " AND ".join(where) if where else "")
        return [Adjudication(*r[:9], json.loads(r[9])) for r in self._read(sql + " ORDER BY seq", params)]

    def export(self, path: str | Path) -> Path:
        """Rounds, assignments, reviews and adjudications as one JSON file (atomic, 0600: it holds
        every blind review; ``team_batch`` writes it only once the round is closed)."""
        from promedical.core.files import write_json

        rounds = self.rounds()
        return write_json(path, mode=PRIVATE, obj={
            "rounds": rounds,
            "assignments": [a.__dict__ for r in rounds for a in self.assignments(r["round"])],
            "reviews": [r.to_dict() for r in self.reviews()],
            "adjudications": [a.__dict__ for a in self.adjudications()]})

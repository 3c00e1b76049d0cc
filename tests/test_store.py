import json
import multiprocessing
import os
import pickle
import sqlite3
import warnings

import pytest
from conftest import make_rubric

from promedical.core.rubric import Rubric, RubricError
from promedical.review.session import ReviewSession
from promedical.rubrics.store import RubricStore, StaleRevisionError, StoreError


def edited(rubric: Rubric, text: str) -> Rubric:
    d = rubric.to_dict()
    d["criteria"][0]["text"] = text
    return Rubric.from_dict(d)


def test_every_revision_is_kept_and_current_is_the_latest(tmp_path):
    store = RubricStore(tmp_path)
    r1 = Rubric.from_dict(make_rubric("a"))
    store.save(r1, author="gen", action="create", base_revision=0)
    rev = store.save(edited(r1, "Asks about haemoptysis and weight loss."), author="dr_li",
                     reason="more specific red flags", status="approved", base_revision=1)
    assert rev.revision == 2
    assert rev.changes == [{"op": "change", "criterion": "p1", "field": "text",
                            "old": "Asks about red flags such as coughing blood.",
                            "new": "Asks about haemoptysis and weight loss."}]
    history = store.history("a")
    assert [h.author for h in history] == ["gen", "dr_li"]
    assert history[0].rubric == r1
    assert store.current()["a"].status == "approved" and store.latest("a") == rev
    assert store.get("a", 1) == history[0] and store.get("a", 3) is None and store.latest("b") is None
    assert store.rubrics(status="approved")[0].criteria[0].text.startswith("Asks about haemoptysis")
    assert store.statuses() == {"a": "approved"} and store.status_counts() == {"approved": 1} and len(store) == 1
    # the JSONL export of the history: one revision per line, in save order, the full rubric each time
    lines = store.export_history(tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [h.to_dict() for h in history]
    assert json.loads(lines[0])["rubric"]["criteria"][0]["text"].startswith("Asks about red")


def test_invalid_rubric_is_refused_and_nothing_is_written(tmp_path):
    store = RubricStore(tmp_path)
    good = Rubric.from_dict(make_rubric("a"))
    store.save(good, author="gen")
    bad = Rubric.from_dict(make_rubric("a"))
    bad.criteria[0].weight = 0.9  # weights no longer sum to 1
    with pytest.raises(RubricError, match="weights sum to 1.4"):
        store.save(bad, author="dr_li")
    with pytest.raises(ValueError, match="status must be one of"):
        store.save(good, author="dr_li", status="done")
    with pytest.raises(ValueError, match="author"):
        store.save(good, author="  ")
    assert len(store.history("a")) == 1 and store.revision_count() == 1


def test_a_save_based_on_a_stale_revision_is_refused_and_writes_nothing(tmp_path):
    store = RubricStore(tmp_path)
    r = Rubric.from_dict(make_rubric("a"))
    store.save(r, author="gen", action="create", base_revision=0)
    store.save(edited(r, "Asks about coughing blood."), author="dr_li", base_revision=1, status="in_review")
    before = store.revisions()
    with pytest.raises(StaleRevisionError) as err:
        store.save(edited(r, "Asks about night sweats."), author="dr_ng", base_revision=1)
    e = err.value
    assert (e.rubric_id, e.base_revision, e.current.revision, e.current.author) == ("a", 1, 2, "dr_li")
    msg = str(e)
    assert "based on revision 1" in msg and "revision 2 (in_review) was saved by dr_li" in msg
    assert "nothing was written" in msg and "\n" not in msg
    with pytest.raises(StaleRevisionError, match="would create rubric 'a', which already exists"):
        store.save(r, author="gen", base_revision=0)
    with pytest.raises(StaleRevisionError, match="holds no rubric 'zz'"):
        store.save(Rubric.from_dict(make_rubric("zz")), author="gen", base_revision=3)
    assert store.revisions() == before
    copy = pickle.loads(pickle.dumps(e))  # crosses process boundaries intact
    assert str(copy) == msg and copy.current == e.current
    assert store.save(edited(r, "Asks about night sweats."), author="dr_ng", base_revision=2).revision == 3


def test_save_many_is_all_or_nothing(tmp_path):
    store = RubricStore(tmp_path)
    store.import_rubrics([Rubric.from_dict(make_rubric(i)) for i in ("a", "b")], author="seed")
    a, b = store.latest("a").rubric, store.latest("b").rubric
    ok = {"rubric": edited(a, "Asks about coughing blood."), "author": "dr_li", "base_revision": 1}
    with pytest.raises(StaleRevisionError):
        store.save_many([ok, {"rubric": edited(b, "x y z"), "author": "dr_li", "base_revision": 7}])
    assert store.revision_count() == 2
    # two items on one rubric: the second is based on the revision the first creates
    revs = store.save_many([ok, {"rubric": edited(a, "Asks about blood."), "author": "dr_ng", "base_revision": 2}])
    assert [(r.rubric_id, r.revision) for r in revs] == [("a", 2), ("a", 3)]


def test_history_is_append_only_and_numbered_without_gaps_in_the_database(tmp_path):
    store = RubricStore(tmp_path)
    store.save(Rubric.from_dict(make_rubric("a")), author="gen")
    db = sqlite3.connect(store.path)
    try:
        for sql in ("UPDATE revisions SET author = 'mallory'", "DELETE FROM revisions"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)
        row = db.execute("SELECT rubric_id, timestamp, author, action, status, reason, changes, rubric "
                         "FROM revisions").fetchone()
        for revision in (1, 3):  # a duplicate number, a gap
            with pytest.raises(sqlite3.IntegrityError):
                db.execute("INSERT INTO revisions (rubric_id, revision, timestamp, author, action, status, reason, "
                           "changes, rubric) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (row[0], revision, *row[1:]))
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    assert [h.author for h in store.history("a")] == ["gen"]


def test_reads_use_the_indexes_not_a_scan_of_the_history(tmp_path):
    store = RubricStore(tmp_path)
    store.import_rubrics([Rubric.from_dict(make_rubric(f"r{i}")) for i in range(50)], author="seed")
    db = store._db()
    from promedical.rubrics.store import COLUMNS, LATEST
    for sql in (LATEST + " WHERE l.rubric_id = ?",
                f"SELECT {COLUMNS} FROM revisions WHERE rubric_id = ? ORDER BY revision",
                "SELECT rubric_id, status FROM latest WHERE rubric_id IN (?)"):
        plan = " | ".join(r[-1] for r in db.execute("EXPLAIN QUERY PLAN " + sql, ("r7",)))
        assert "SCAN" not in plan and "SEARCH" in plan, (sql, plan)


def test_not_a_store_is_one_clear_error(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "revisions.sqlite").write_text("hello, I am not a database\n" * 100)
    with pytest.raises(StoreError, match=r"revisions.sqlite: not a rubric store \(file is not a database\)"):
        RubricStore(tmp_path / "junk").ids()
    (tmp_path / "dir" / "revisions.sqlite").mkdir(parents=True)
    with pytest.raises(StoreError, match="not a regular file"):
        RubricStore(tmp_path / "dir").ids()
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "fifo").mkdir()
    (tmp_path / "fifo" / "revisions.jsonl").symlink_to(tmp_path / "fifo.jsonl")
    with pytest.raises(StoreError, match="not a regular file, cannot migrate it"):
        RubricStore(tmp_path / "fifo").ids()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the store folder"):
        RubricStore(tmp_path / "file" / "rubrics").ids()


def legacy_record(rid, revision, text, author="gen", status="draft"):
    r = make_rubric(rid)
    r["criteria"][0]["text"] = text
    return {"rubric_id": rid, "revision": revision, "timestamp": f"2026-01-0{revision}T00:00:00.000+00:00",
            "author": author, "action": "create" if revision == 1 else "edit", "status": status,
            "reason": "", "changes": [], "rubric": r}


def test_a_jsonl_store_is_migrated_on_first_open(tmp_path):
    root = tmp_path / "rubrics"
    root.mkdir()
    records = [legacy_record("a", 1, "Asks about red flags."), legacy_record("b", 1, "Asks about fever."),
               legacy_record("a", 2, "Asks about coughing blood.", "dr_li", "approved"),
               # the old store's race: two writers took the same number
               legacy_record("b", 1, "Asks about fever and chills.", "dr_ng", "in_review")]
    lines = [json.dumps(r) for r in records]
    lines.insert(2, "{not json")
    lines.append('{"rubric_id": "a", "revis')  # a writer died mid-line
    (root / "revisions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning) as caught:
        store = RubricStore(root)
        assert store.ids() == ["a", "b"]
    text = " ".join(str(w.message) for w in caught)
    assert "skipped 2 unreadable revision line(s)" in text and "revisions.jsonl:3: malformed JSON" in text
    assert "revisions.jsonl:6: malformed JSON" in text
    assert "1 revision number(s) renumbered" in text
    assert not (root / "revisions.jsonl").exists() and (root / "revisions.jsonl.migrated").exists()
    assert [(h.revision, h.author, h.status) for h in store.history("a")] == [(1, "gen", "draft"), (2, "dr_li", "approved")]
    assert [(h.revision, h.author) for h in store.history("b")] == [(1, "gen"), (2, "dr_ng")]
    assert store.latest("b").rubric.criteria[0].text == "Asks about fever and chills."
    assert store.history("a")[0].timestamp == "2026-01-01T00:00:00.000+00:00"  # kept as recorded
    # the migrated store is a normal one: checked saves, and an export that migrates back to the same history
    with pytest.raises(StaleRevisionError):
        store.save(store.latest("a").rubric, author="dr_x", base_revision=1)
    exported = store.export_history(tmp_path / "again" / "revisions.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean log migrates without a word
        assert RubricStore(exported.parent).revisions() == store.revisions()


def _writer(args):
    root, worker = args
    store = RubricStore(root)
    for i in range(10):
        store.save(Rubric.from_dict(make_rubric(f"w{worker}-{i}")), author=f"w{worker}", base_revision=0)


@pytest.mark.subprocess
def test_concurrent_writers_lose_nothing(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_writer, [(tmp_path, w) for w in range(4)])
    store = RubricStore(tmp_path)
    assert len(store.current()) == 40 and store.revision_count() == 40


ROUNDS = 8


def _reviewer(args):
    """One reviewer process: each round, open the rubric, edit, wait for the other, save at the same moment."""
    root, name, barrier = args
    store = RubricStore(root)
    out = []
    for i in range(ROUNDS):
        barrier.wait(timeout=60)          # the previous round's saves are all done
        s = ReviewSession(store, "a", name)
        text = f"Asks about red flags ({name}, round {i})."
        s.edit("p1", "text", text)
        base = s.base_revision
        barrier.wait(timeout=60)          # both have read the same latest revision
        try:
            rev = s.save("in_review")
            out.append({"round": i, "text": text, "base": base, "accepted": rev.revision})
        except StaleRevisionError as exc:
            kept = json.loads(s.autosave_path.read_text())
            out.append({"round": i, "text": text, "base": base, "refused": str(exc),
                        "current": exc.current.revision, "kept": kept["rubric"]["criteria"][0]["text"]})
            s.discard()
    return out


@pytest.mark.subprocess
def test_two_processes_saving_one_rubric(tmp_path):
    store = RubricStore(tmp_path)
    store.save(Rubric.from_dict(make_rubric("a")), author="gen", action="create", base_revision=0)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: nothing shared but the file
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            results = pool.map(_reviewer, [(tmp_path, "dr_li", barrier), (tmp_path, "dr_ng", barrier)])
    attempts = [dict(r, reviewer=name) for name, rs in zip(("dr_li", "dr_ng"), results) for r in rs]
    accepted = [a for a in attempts if "accepted" in a]
    refused = [a for a in attempts if "refused" in a]
    assert len(attempts) == 2 * ROUNDS
    # both saved on the same base each round: exactly one wins, the other is told why
    assert sorted(a["round"] for a in accepted) == list(range(ROUNDS))
    history = store.history("a")
    assert [h.revision for h in history] == list(range(1, ROUNDS + 2))  # unique, no gap
    by_revision = {h.revision: h for h in history}
    for a in accepted:
        h = by_revision[a["accepted"]]
        assert (h.author, h.rubric.criteria[0].text, a["accepted"]) == (a["reviewer"], a["text"], a["base"] + 1)
    for r in refused:
        winner = next(a for a in accepted if a["round"] == r["round"])
        assert r["current"] == winner["accepted"]
        assert f"based on revision {r['base']}, but revision {r['current']} (in_review) was saved by " \
               f"{winner['reviewer']}" in r["refused"]
        assert "Your edits are kept in" in r["refused"] and r["kept"] == r["text"]  # the text was on disk
    assert len(store.history("a")) == 1 + len(accepted)


def test_import_and_export(tmp_path):
    store = RubricStore(tmp_path / "s")
    rubrics = [Rubric.from_dict(make_rubric(i)) for i in ("a", "b")]
    assert store.import_rubrics(rubrics + rubrics[:1], author="seed") == 2
    assert store.import_rubrics(rubrics, author="seed") == 0
    out = store.export(tmp_path / "out.jsonl")
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "b"]
    bad = Rubric.from_dict(make_rubric("c"))
    bad.criteria[0].weight = 0.9
    with pytest.raises(RubricError) as err:
        store.import_rubrics([Rubric.from_dict(make_rubric("d")), bad], author="seed")
    assert "<import 1: 'c'>" in str(err.value) and store.ids() == ["a", "b"]  # nothing imported


def test_import_in_several_transactions_keeps_order(tmp_path, monkeypatch):
    monkeypatch.setattr("promedical.rubrics.store.IMPORT_CHUNK", 7)
    store = RubricStore(tmp_path)
    store.save(Rubric.from_dict(make_rubric("r5")), author="dr_li", status="approved")
    ids = [f"r{i}" for i in range(30)]
    assert store.import_rubrics([Rubric.from_dict(make_rubric(i)) for i in ids], author="seed") == 29
    assert store.ids() == ["r5"] + [i for i in ids if i != "r5"]
    assert store.statuses(["r5", "r6", "nope"]) == {"r5": "approved", "r6": "draft"}
    assert list(store.current(["r9", "r2", "nope"])) == ["r9", "r2"]
    assert store.ids(status="approved") == ["r5"] and store.status_counts() == {"approved": 1, "draft": 29}


def test_busy_is_told_apart_from_not_a_store(tmp_path, monkeypatch):
    """An opener waits for others at most BUSY_TIMEOUT_S, then says "busy"; a broken file says "not a store"."""
    import promedical.rubrics.store as store_module
    from promedical.core.files import locked

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.3)
    # another opener is creating the store (holds the opening lock)
    with locked(tmp_path / "a" / "revisions.sqlite"):
        with pytest.raises(StoreError, match=r"revisions.sqlite: busy: another process held the store for over 0.3 s"):
            RubricStore(tmp_path / "a").ids()
    assert RubricStore(tmp_path / "a").ids() == []  # free again: it opens
    # a database another program holds in an exclusive transaction (rollback journal): busy, not broken
    (tmp_path / "b").mkdir()
    other = sqlite3.connect(tmp_path / "b" / "revisions.sqlite", isolation_level=None)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError) as err:
            RubricStore(tmp_path / "b").ids()
        assert ": busy: " in str(err.value) and "not a rubric store" not in str(err.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    # broken files: not a store, whatever the wait
    for content in (b"hello, I am not a database\n" * 100, b"SQLite format 3\x00" + b"\xff" * 200):
        root = tmp_path / f"junk{len(content)}"
        root.mkdir()
        (root / "revisions.sqlite").write_bytes(content)
        with pytest.raises(StoreError, match="not a rubric store") as err:
            RubricStore(root).ids()
        assert ": busy: " not in str(err.value)


_OPENERS = None


def _open_and_save(worker):
    _OPENERS.wait(timeout=60)  # every process opens the fresh store at the same moment
    store = RubricStore(_OPENERS.root)
    store.save(Rubric.from_dict(make_rubric(f"o{worker}")), author=f"o{worker}", base_revision=0)
    return worker


@pytest.mark.subprocess
def test_many_processes_opening_a_fresh_store_at_once_all_save(tmp_path):
    global _OPENERS
    ctx = multiprocessing.get_context("fork")
    for k in range(5):
        _OPENERS = ctx.Barrier(6)
        _OPENERS.root = tmp_path / f"s{k}"
        with ctx.Pool(6) as pool:
            assert sorted(pool.map(_open_and_save, range(6), chunksize=1)) == list(range(6))
        assert RubricStore(tmp_path / f"s{k}").revision_count() == 6

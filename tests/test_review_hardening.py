"""Issue 23 §1, team review hardened — each class tested over several hostile inputs:

1. identity from the launch: a page that sets the reviewer field (or any trait it should not, or
   clicks what is disabled or hidden) changes nothing; the app keeps who the launch says and says so
   in one line (the widget messages are fed in as the comm would: ``Widget._handle_msg``);
2. blind stays blind: the team database (and its WAL/SHM), autosaves and summaries are 0600 (autosaves
   in 0700 folders); a mid-round batch run writes no summary, and no file other than the 0600 team
   database holds a reviewer's blind review before adjudication;
3. reviewer names compare as people (NFKC, case-fold, invisible characters, whitespace): look-alikes
   of ``Ana`` are Ana — an adjudicator, an assignment, a login — and another spelling is refused;
4. the server launch: no token on Voilà's argv, signals take the server down (real subprocesses);
5. damaged SQLite files are refused before serving, in one line; errors in the app are one line.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_rubric

from promedical.app.cli import main
from promedical.core.rubric import Rubric, RubricError
from promedical.core.workspace import Workspace
from promedical.review.adjudication import resolve, round_closed, unresolved
from promedical.review.names import clean_name, reviewer_key
from promedical.review.queues import (
    BlindReviewSession,
    assign,
    plan_assignments,
    queue,
    read_assignment_file,
    submit_review_records,
)
from promedical.review.rounds import open_round, round_pool
from promedical.review.team import TeamError, TeamStore
from promedical.review.team_batch import run_team_review
from promedical.rubrics.store import StoreError, open_store

ROOT = Path(__file__).resolve().parent.parent
SECRET = "ANA-BLIND-EDIT-7f3c"  # ana's blind edit: must not be readable anywhere but the 0600 team file


def rub(rid):
    return Rubric.from_dict(make_rubric(rid))


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)  # what a shared machine usually has: new files 0644 unless the kit says otherwise
    yield
    os.umask(old)


@pytest.fixture
def ws(tmp_path):
    """A workspace: round 1 with r1 (ana + ben, blind), r2 (ana), r3 (ben)."""
    ws = tmp_path / "ws"
    store = open_store(ws)
    team = TeamStore(store)
    open_round(store, team, [rub("r1"), rub("r2"), rub("r3")], round_pool(store, base=[]))
    assign(store, team, {"r1": ["ana", "ben"], "r2": ["ana"], "r3": ["ben"]})
    return ws


def submit(ws, who, rid, text=None, decision="approved"):
    store = open_store(ws)
    s = BlindReviewSession(store, TeamStore(store), rid, who, autosave=False)
    if text:
        s.edit("p1", "text", text)
    return s.save(decision)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# == 1. identity from the launch; every page message checked ========================================
def page(widget, state=None, click=False):
    """Deliver a message from the page exactly as the comm does (ipywidgets' ``_handle_msg``)."""
    data = {"method": "custom", "content": {"event": "click"}} if click else {"method": "update", "state": state}
    widget._handle_msg({"content": {"data": data}, "buffers": []})


@pytest.fixture
def ben_app(ws):
    from widgets.team import review_app

    submit(ws, "ana", "r1", SECRET)  # ana's blind review is in; ben has not submitted
    app = review_app(open_store(ws), "ben")
    assert app.identity == "ben" and app.reviewer.session.reviewer == "ben"
    return ws, app


def shown(root) -> str:
    """Every text value under a widget (what the page can display)."""
    import ipywidgets as W

    out, stack = [], [root]
    while stack:
        w = stack.pop()
        if isinstance(getattr(w, "value", None), str):
            out.append(w.value)
        if isinstance(w, W.Box):
            stack += list(w.children)
    return "\n".join(out)


def status_line(app) -> str:
    import re

    text = " ".join([app.status.value, app.reviewer.status.value])
    return re.sub("<[^>]+>", "", text).strip()


@pytest.mark.parametrize("state", [
    {"value": "ana"},
    {"value": "ana", "disabled": False},
    {"disabled": False},
    {"value": "ａｎａ"},
    {"value": "ana\u200b"},
    {"description": "Reviewer", "value": "ana"},
])
def test_the_page_cannot_change_the_reviewer(ben_app, state):
    ws, app = ben_app
    r = app.reviewer
    page(r.reviewer_name, state)
    assert r.reviewer_name.value == "ben" and r.reviewer_name.disabled and r.identity == "ben"
    assert r.session.reviewer == "ben" and r.session.submitted is None
    # ben still sees the draft, never ana's blind review
    assert SECRET not in json.dumps(r.session.rubric) and SECRET not in shown(app)
    line = status_line(app)
    assert "refused a change from the page" in line and "you are ben" in line and "\n" not in line
    # what he submits next is his, under his name
    r.go(r.ids.index("r1"))
    page(r.approve_button, click=True)
    team = TeamStore(open_store(ws))
    assert sorted((x.reviewer, x.rubric_id) for x in team.reviews(1)) == [("ana", "r1"), ("ben", "r1")]


def test_assigning_the_field_in_the_kernel_is_put_back(ben_app):
    _, app = ben_app
    r = app.reviewer
    for name in ("ana", "Ana", "", "ben "):
        r.reviewer_name.value = name
        assert r.reviewer_name.value == "ben" and r.session.reviewer == "ben"
        assert "the reviewer is ben" in status_line(app)


@pytest.mark.parametrize("target, state", [
    ("approve_button", {"disabled": False, "description": "x"}),
    ("save_button", {"layout": "IPY_MODEL_x"}),
    ("comment", {"disabled": True, "placeholder": "<b>x</b>"}),
    ("progress", {"value": "99 / 99 submitted"}),
    ("criteria_box", {"children": []}),
])
def test_traits_the_page_should_not_set_are_refused(ben_app, target, state):
    _, app = ben_app
    w = getattr(app.reviewer, target)
    before = {k: getattr(w, k) for k in state if k in w.keys}
    page(w, state)
    assert {k: getattr(w, k) for k in before} == before
    assert app.guard.refused[-1][1] == tuple(state)


def test_layouts_hidden_and_disabled_controls_take_nothing(ben_app):
    ws, app = ben_app
    r = app.reviewer
    page(r.rebase_button.layout, {"display": "flex"})  # a hidden control cannot be shown from the page
    assert r.rebase_button.layout.display == "none"
    page(r.rebase_button, click=True)  # … nor clicked: no traceback, one line
    assert app.guard.refused[-1] == ("pm-rebase", ("click",))
    # after submitting, approve is disabled: a second click from the page is refused
    r.go(r.ids.index("r1"))
    page(r.approve_button, click=True)
    r.go(r.ids.index("r1"))
    assert r.approve_button.disabled
    page(r.approve_button, click=True)
    assert app.guard.refused[-1] == ("pm-approve", ("click",))
    assert len(TeamStore(open_store(ws)).reviews(1, reviewer="ben")) == 1
    # the adjudication dropdown's options cannot be rewritten by the page either
    page(app.adjudication.choose, {"_options_labels": ["r1"], "index": 0})
    assert app.adjudication.choose.options == () and app.guard.refused[-1][1] == ("_options_labels",)


def test_inputs_the_page_may_set_still_work(ben_app):
    _, app = ben_app
    r = app.reviewer
    r.go(r.ids.index("r1"))
    page(r.comment, {"value": "b1 is filler"})
    assert r.session.comment == "b1 is filler"
    page(r.rows["b1"].decision, {"index": 1})
    assert r.session.rejected("b1")
    page(app.tab, {"selected_index": 2})
    assert app.tab.selected_index == 2
    page(r.rows["p1"].weight, {"value": "not a number"})  # a bad value: one line, nothing changes
    assert "error:" in status_line(app) and "\n" not in status_line(app)


def test_the_app_takes_its_identity_from_the_launch_environment(ws):
    from widgets.team import app_from_launch

    app = app_from_launch({"PROMEDICAL_WORKSPACE": str(ws), "PROMEDICAL_REVIEWER": "ana"})
    assert app.identity == "ana" and app.reviewer.ids == ["r1", "r2"]
    for env, said in [({"PROMEDICAL_REVIEWER": "ana"}, "no workspace"),
                      ({"PROMEDICAL_WORKSPACE": str(ws), "PROMEDICAL_REVIEWER": "ANA"}, "spelled differently"),
                      ({"PROMEDICAL_WORKSPACE": str(ws), "PROMEDICAL_REVIEWER": "ana", "PROMEDICAL_ROUND": "x"},
                       "round number"),
                      ({"PROMEDICAL_WORKSPACE": str(ws), "PROMEDICAL_REVIEWER": "ana", "PROMEDICAL_ROUND": "9"},
                       "no round 9")]:
        w = app_from_launch(env)
        assert "pm-app-error" in w._dom_classes and said in w.value and "Traceback" not in w.value


def test_the_notebook_reads_the_launch_not_a_widget():
    nb = json.loads((ROOT / "notebooks" / "review_app.ipynb").read_text())
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "app_from_launch()" in code and "reviewer_name" not in code


# == 2. blind stays blind ============================================================================
def test_team_database_and_its_sidecars_are_private(tmp_path):
    store = open_store(tmp_path / "w")
    team = TeamStore(store)
    open_round(store, team, [rub("r1")], round_pool(store, base=[]))
    for side in ("", "-wal", "-shm"):
        p = Path(f"{team.path}{side}")
        assert p.is_file() and mode(p) == 0o600, (p, oct(mode(p)))
    team.close()
    os.chmod(team.path, 0o644)  # an old file, made before: tightened when opened
    TeamStore(store).rounds()
    assert mode(team.path) == 0o600


def test_autosaves_are_private(ws):
    store = open_store(ws)
    s = BlindReviewSession(store, TeamStore(store), "r1", "ana")
    s.edit("p1", "text", SECRET)
    assert mode(s.autosave_path) == 0o600
    for d in [s.autosave_path.parent, *s.autosave_path.parent.parents]:
        if d == store.autosave_dir.parent:
            break
        assert mode(d) == 0o700, d
    os.chmod(store.autosave_dir, 0o755)  # loosened by hand: tightened on the next autosave
    s.comment = "x"
    assert mode(store.autosave_dir) == 0o700


def readable_by_others(root: Path) -> list[Path]:
    """Files under root that another local user could read (o+r on the file, o+x on every folder)."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        d = Path(dirpath)
        if any(mode(x) & 0o005 != 0o005 for x in [d, *[p for p in d.parents if root in p.parents or p == root]]):
            continue
        out += [d / f for f in files if mode(d / f) & 0o004]
    return out


def test_a_mid_round_batch_run_reveals_no_blind_review(ws, tmp_path):
    submit(ws, "ana", "r1", SECRET)
    out = run_team_review(ws)
    w = Workspace.of(ws)
    assert out["team_file"] is None and out["summary"] is None and "round 1 is open" in out["note"]
    assert not w.team_file.exists() and not w.team_review_summary.exists()
    assert mode(w.team_rounds_chart) == 0o600
    store = open_store(ws)
    assert set(unresolved(store, TeamStore(store), 1)) == {"r1", "r2", "r3"} and not round_closed(store, TeamStore(store))
    leaks = [p for p in readable_by_others(ws) if SECRET.encode() in p.read_bytes()]
    assert leaks == []
    # every file that holds it is the owner's only
    holders = [p for p in ws.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert holders and all(mode(p) == 0o600 and p.name.startswith("team.sqlite") for p in holders)


def test_the_summary_is_written_once_the_round_closes(ws, tmp_path):
    submit(ws, "ana", "r1", SECRET)
    submit(ws, "ben", "r1")  # they disagree: r1 waits for adjudication
    submit(ws, "ana", "r2")
    submit(ws, "ben", "r3", decision="rejected")
    assert run_team_review(ws)["open_rubrics"] == ["r1"]
    assert not Workspace.of(ws).team_file.exists()
    adj = tmp_path / "adj.jsonl"
    adj.write_text(json.dumps({"rubric_id": "r1", "adjudicator": "cy", "reason": "ana is right", "choice": "ana"}) + "\n")
    out = run_team_review(ws, adjudications_file=adj)
    w = Workspace.of(ws)
    assert out["open_rubrics"] == [] and out["team_file"] == str(w.team_file)
    assert mode(w.team_file) == mode(w.team_review_summary) == 0o600
    assert SECRET in w.team_file.read_text()  # after adjudication the file has both reviews, for the team only


# == 3. one person, one name =========================================================================
LOOKALIKES = ["Ana", "ana", "ANA", "ana\u200b", "\u200bana", "a\u200dna", "an\u200ca", "ａｎａ", "Ａｎａ", "ＡＮＡ",
              " ana ", "ana\u00ad", "\ufeffana", "ana\u2060", "ana\u180e", "ana\ufe0f", "ana\u034f", "ana\u200e",
              "\u202eana", "ana\u3164", "ana\t", "an\u0061", "\u0041na"]
OTHERS = ["anna", "an a", "ána", "ann", "an", "\u0430na"]  # the last: a Cyrillic а — another script, another name


def test_lookalikes_are_one_person():
    keys = {reviewer_key(n) for n in LOOKALIKES}
    assert keys == {"ana"}
    assert all(reviewer_key(n) != "ana" for n in OTHERS)
    assert clean_name("ana\u200b") == "ana" and clean_name("ａｎａ") == "ana" and clean_name("  Dr   Ng\u2028") == "Dr Ng"
    assert clean_name("\u200b\u200d ") == "" and reviewer_key(None) == ""


@pytest.mark.parametrize("name", LOOKALIKES)
def test_an_adjudicator_may_not_be_a_reviewer_however_spelled(tmp_path, name):
    store = open_store(tmp_path / "w")
    team = TeamStore(store)
    open_round(store, team, [rub("r1")], round_pool(store, base=[]))
    assign(store, team, {"r1": ["Ana", "ben"]})
    for who, text in (("Ana", SECRET), ("ben", None)):
        s = BlindReviewSession(store, team, "r1", who, autosave=False)
        if text:
            s.edit("p1", "text", text)
        s.save("approved")
    with pytest.raises(TeamError, match="another clinician must adjudicate") as err:
        resolve(store, team, "r1", name, "mine is right", choice="Ana")
    assert "\n" not in str(err.value)
    assert team.adjudications(1) == [] and store.latest("r1").revision == 1
    # the app does not offer her own rubric either
    from widgets.team import AdjudicationView

    if clean_name(name) == "Ana":
        assert AdjudicationView(store, team, name).choose.options == ()


@pytest.mark.parametrize("name", [n for n in LOOKALIKES if clean_name(n) != "Ana"])
def test_another_spelling_of_a_team_member_is_refused(ws, name):
    ws_store = open_store(ws)
    team = TeamStore(ws_store)
    team_names = {"ana", "ben"}
    assert set(team.names()) == team_names
    if clean_name(name) == "ana":  # the same spelling once cleaned: it is ana
        assert team.canonical(name) == "ana" and queue(team, name) == ["r1", "r2"]
        return
    with pytest.raises(TeamError, match="spelled differently") as err:
        team.canonical(name)
    assert "\n" not in str(err.value)
    with pytest.raises(TeamError, match="spelled differently"):
        BlindReviewSession(ws_store, team, "r1", name)
    open_round(ws_store, team, [rub("r9")], round_pool(ws_store, base=[]))
    with pytest.raises(TeamError, match="spelled differently"):
        assign(ws_store, team, {"r9": [name]})
    assert team.assignments(2) == []
    rc = main(["review", "--workspace", str(ws), "--reviewer", name, "--no-browser"])
    assert rc == 2


def test_plans_and_files_with_one_person_twice_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one person spelled two ways"):
        plan_assignments([rub("r1")], ["Ana", "ａｎａ"])
    assert plan_assignments([rub("r1")], ["ana", "ana\u200b", "ben"], double_share=1.0) == {"r1": ["ana", "ben"]}
    assert plan_assignments([rub("r1")], ["ben", "Ana"], by="specialty",
                            specialties={"ben": ["cardiology"], " ana\u200b": ["pulmonology"]}) == {"r1": ["Ana"]}
    path = tmp_path / "plan.jsonl"
    for pair in (["Ana", "ana"], ["ana", "ana\u200b"], ["ana", "ＡＮＡ"]):
        path.write_text(json.dumps({"rubric_id": "r1", "reviewers": pair}) + "\n")
        with pytest.raises(RubricError, match="distinct"):
            read_assignment_file(path, {"r1"})
    store = open_store(tmp_path / "w")
    team = TeamStore(store)
    open_round(store, team, [rub("r1"), rub("r2")], round_pool(store, base=[]))
    with pytest.raises(TeamError, match="one person spelled two ways"):
        assign(store, team, {"r1": ["Ana"], "r2": ["ana"]})
    assign(store, team, {"r1": ["ana\u200b"], "r2": ["ａｎａ"]})  # both clean to "ana": stored once, clean
    assert {a.reviewer for a in team.assignments(1)} == {"ana"}


def test_batch_files_and_picks_compare_people(ws, tmp_path):
    f = tmp_path / "ana.jsonl"
    f.write_text(json.dumps({"rubric_id": "r1", "reviewer": "ANA", "decision": "approve"}) + "\n")
    with pytest.raises(RubricError, match="spelled differently"):
        submit_review_records(open_store(ws), TeamStore(open_store(ws)), f, reviewer="ana")
    f.write_text(json.dumps({"rubric_id": "r1", "reviewer": "ana\u200b", "decision": "approve",
                             "remove": ["b1"]}) + "\n")
    store = open_store(ws)
    team = TeamStore(store)
    assert submit_review_records(store, team, f, reviewer="ana")["submitted"] == 1
    assert [r.reviewer for r in team.reviews(1)] == ["ana"]
    submit(ws, "ben", "r1")
    rev = resolve(store, team, "r1", "cy", "merge", choice="ＢＥＮ", picks={"b1": "ana\u200b"})
    assert "b1" not in {c.id for c in rev.rubric.criteria}
    assert team.adjudications(1)[0].picks == {"base": "ben", "b1": "ana"}


# == 4. the server launch: no token on argv; signals take Voilà down ================================
def test_voila_argv_has_no_token_and_the_environment_carries_it(ws):
    from promedical.app.review_server import app_env, voila_command

    argv = voila_command(8765)
    assert not any("token" in a.lower() and "auto_token" not in a for a in argv)
    env = app_env(ws, "ana", None, "s3cret-token")
    assert env["JUPYTER_TOKEN"] == "s3cret-token" and "s3cret-token" not in " ".join(argv)
    assert env["PROMEDICAL_REVIEWER"] == "ana" and "PROMEDICAL_ROUND" not in env


def children_of(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(p.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


VOILA_UP_S = 90


def answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@pytest.mark.subprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_promedical_review_takes_its_server_down(ws, tmp_path, sig):
    """The real command, the real Voilà: the token is not on its argv; SIGTERM / SIGHUP to the command
    stop the server (signal handlers); SIGKILL too (the child's parent-death signal)."""
    cmd = [sys.executable, "-m", "promedical.app.cli", "review", "--workspace", str(ws), "--reviewer", "ana",
           "--no-browser"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    server = None
    try:
        line = proc.stdout.readline()
        assert "?token=" in line, line
        token = line.split("?token=")[1].split()[0]
        deadline = time.monotonic() + 30
        while server is None and time.monotonic() < deadline:
            kids = [k for k in children_of(proc.pid) if b"voila" in Path(f"/proc/{k}/cmdline").read_bytes()]
            server = kids[0] if kids else None
            time.sleep(0.1)
        assert server is not None, "no Voilà child"
        argv = Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")
        assert token.encode() not in b" ".join(argv) and not any(a.startswith(b"--token") for a in argv)
        assert f"JUPYTER_TOKEN={token}".encode() in Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
        base = line.split("?token=")[0].split()[-1]
        deadline = time.monotonic() + VOILA_UP_S
        while not answers(base + "login"):  # serving: its login page answers
            assert time.monotonic() < deadline and alive(server), f"Voilà did not answer within {VOILA_UP_S} s"
            time.sleep(0.25)
        os.kill(proc.pid, sig)
        deadline = time.monotonic() + 20
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(server), f"the server outlived the command ({signal.Signals(sig).name})"
        assert not answers(base + "login")
        assert proc.wait(timeout=20) == (-sig if sig == signal.SIGKILL else 128 + sig)
    finally:
        for pid in [server, proc.pid]:
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


STAND_IN = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")


def stand_in_server():
    """A stand-in for Voilà started as the real one is (``launch``): python sleeping, with a child of its own."""
    from promedical.app.review_server import launch

    proc = launch([sys.executable, "-c", STAND_IN], dict(os.environ))
    deadline = time.monotonic() + 10
    while not children_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, children_of(proc.pid)[0]


@pytest.mark.subprocess
def test_stop_takes_the_whole_server_group_down():
    from promedical.app.review_server import stop

    proc, grandchild = stand_in_server()
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)  # its own group: Ctrl-C reaches only us
    t = time.monotonic()
    stop(proc)
    while alive(grandchild) and time.monotonic() - t < 5:
        time.sleep(0.05)
    assert not alive(proc.pid) and not alive(grandchild) and time.monotonic() - t < 5


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_supervise_stops_the_server_on_a_signal_to_us(sig):
    """``supervise`` (what ``serve`` waits in): a signal to this process stops the server, and the
    handlers it set are put back."""
    import threading

    from promedical.app.review_server import supervise

    proc, grandchild = stand_in_server()
    before = signal.getsignal(sig)
    threading.Timer(0.5, os.kill, (os.getpid(), sig)).start()
    t = time.monotonic()
    assert supervise(proc) == 128 + sig
    assert time.monotonic() - t < 8 and proc.poll() is not None and signal.getsignal(sig) == before
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


# == 5. damaged databases refused before serving; errors in the app are one line =====================
def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"not a database at all\n" * 300)
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "header-only":
        path.write_bytes(data[:60])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "page-flip":
        page = 4096
        path.write_bytes(data[:page * 2] + bytes(b ^ 0x5A for b in data[page * 2:page * 3]) + data[page * 3:])
    elif how == "other-db":
        path.unlink()
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE notes (x)")
        db.commit()
        db.close()


@pytest.fixture
def big_ws(tmp_path):
    """A workspace whose two databases are several pages long, checkpointed (no WAL left)."""
    ws = tmp_path / "ws"
    store = open_store(ws)
    team = TeamStore(store)
    open_round(store, team, [rub(f"r{i}") for i in range(40)], round_pool(store, base=[]))
    assign(store, team, {f"r{i}": ["ana", "ben"] for i in range(40)})
    for i in range(12):
        BlindReviewSession(store, team, f"r{i}", "ana", autosave=False).save("approved")
    for db in (team, store):
        db._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    for p in (ws / "rubrics").glob("*.sqlite-*"):
        p.unlink()
    return ws


@pytest.mark.parametrize("which", ["revisions.sqlite", "team.sqlite"])
@pytest.mark.parametrize("how", ["garbage", "truncated", "header-only", "empty", "page-flip", "other-db"])
def test_a_damaged_database_is_refused_before_serving(big_ws, capsys, which, how):
    path = big_ws / "rubrics" / which
    assert path.stat().st_size > 4096 * 4
    damage(path, how)
    before = path.read_bytes()
    t = time.monotonic()
    rc = main(["review", "--workspace", str(big_ws), "--reviewer", "ana", "--no-browser"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and time.monotonic() - t < 10
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "sqlite3." not in err
    assert which in err and ("damaged" in err or "not a" in err), err
    assert path.read_bytes() == before  # checked read-only: nothing created or "repaired"


def test_a_healthy_workspace_passes_the_check(big_ws):
    from promedical.app.review_server import check_workspace

    assert check_workspace(big_ws, "ana", None) == big_ws / "rubrics"


def test_database_errors_in_the_team_store_are_one_line(ws):
    store = open_store(ws)
    team = TeamStore(store)
    assert team.rounds()  # open
    other = sqlite3.connect(team.path)
    other.execute("DROP TABLE reviews")  # damaged behind the app's back
    other.commit()
    other.close()
    calls = [lambda: team.reviews(1), lambda: team.add_review(1, "r1", "ana", 1, "approved", "", [], rub("r1")),
             lambda: TeamStore(store).rounds()]  # a new opener: refused, the table is not re-created empty
    for call in calls:
        with pytest.raises(StoreError) as err:
            call()
        assert "\n" not in str(err.value) and "team-review file" in str(err.value)
    assert "reviews" not in {r[0] for r in sqlite3.connect(team.path).execute("SELECT name FROM sqlite_master")}


def test_errors_inside_the_app_are_one_line(ws):
    from widgets.team import review_app

    app = review_app(open_store(ws), "ana")
    team = app.reviewer.team
    team.close()
    damage(team.path, "garbage")  # the file is destroyed while the app is open
    for p in team.path.parent.glob("team.sqlite-*"):
        p.unlink()
    page(app.reviewer.next_button, click=True)
    line = status_line(app)
    assert line.startswith("error:") and "not a team-review file" in line and "\n" not in line
    assert "Traceback" not in line and "sqlite3.DatabaseError" not in line

"""``promedical review``: serve the team review app (notebooks/review_app.ipynb) with Voilà.

Voilà runs the notebook in a kernel and shows only its outputs (the widgets): no code cell, no
editor, no file browser — a clinician sees the app and nothing else. It binds to 127.0.0.1 and
asks for a token (random, printed in the URL). See docs/02_review.md, *Team review*, for why Voilà.

- **Identity from the launch**: the kernel gets the workspace, the reviewer (as the team spells
  the name: ``TeamStore.canonical``) and the round through its environment, set here; the app never
  takes them from the page (``widgets.team``).
- **The token is not on any command line** (``ps`` shows argv to every local user): Voilà reads it
  from ``JUPYTER_TOKEN`` in its environment (``--Voila.auto_token=True``: no token on argv, the
  identity provider's default), which only its owner can read (``/proc/PID/environ`` is 0400).
- **The server goes down with the command**: Voilà runs in its own process group; SIGTERM, SIGHUP
  and SIGINT to ``promedical review`` stop that group (SIGTERM, then SIGKILL after a grace period),
  and on Linux the child also gets SIGTERM if its parent dies without a word (``PR_SET_PDEATHSIG``).
- **Checked before serving**: both SQLite files pass ``PRAGMA quick_check`` and hold their tables
  (``rubrics.integrity.check_database``, read-only); a truncated or garbage file is refused in one line.
"""
from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import webbrowser
from pathlib import Path

from promedical.app.notebooks import NOTEBOOK_DIR
from promedical.core.provenance import KIT_ROOT
from promedical.core.workspace import Workspace
from promedical.review.names import clean_name
from promedical.review.team import DB_NAME as TEAM_DB
from promedical.review.team import SCHEMA as TEAM_SCHEMA
from promedical.review.team import TeamError, TeamStore
from promedical.rubrics.integrity import check_database
from promedical.rubrics.store import DB_NAME as STORE_DB
from promedical.rubrics.store import SCHEMA as STORE_SCHEMA
from promedical.rubrics.store import RubricStore, StoreError

APP = NOTEBOOK_DIR / "review_app.ipynb"

STOP_GRACE_S = 10  # SIGTERM, then this long for Voilà to shut its kernels down, then SIGKILL

LAUNCH_ENV = ("PROMEDICAL_WORKSPACE", "PROMEDICAL_REVIEWER", "PROMEDICAL_ROUND")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_workspace(workspace: str | Path, reviewer: str, round: int | None) -> Path:
    """The workspace's store folder; ValueError (one line) when there is nothing to review, a
    database is damaged, or the reviewer's name is another spelling of a team member's."""
    return _checked(workspace, reviewer, round)[0]


def _checked(workspace, reviewer, round) -> tuple[Path, str]:
    if not clean_name(reviewer):
        raise ValueError("--reviewer: give your name (non-empty, visible characters)")
    ws = Path(workspace)
    if not ws.is_dir():
        raise ValueError(f"--workspace: {ws} is not a folder")
    root = Workspace(Workspace.folder(ws)).rubrics  # checked, not created
    if not (root / STORE_DB).is_file() or not (root / TEAM_DB).is_file():
        raise ValueError(f"--workspace: {ws} holds no review round (open one with promedical.review.rounds or notebook 02b)")
    try:  # read-only: a damaged file is refused before anything opens it for writing
        check_database(root / STORE_DB, STORE_SCHEMA, "rubric store")
        check_database(root / TEAM_DB, TEAM_SCHEMA, "team-review file")
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    team = TeamStore(RubricStore(root))
    try:
        try:
            team.round(round)
        except TeamError as exc:
            raise ValueError(f"--round: {exc}") from None
        try:
            name = team.canonical(reviewer)
        except TeamError as exc:
            raise ValueError(f"--reviewer: {exc}") from None
    finally:
        team.close()
        team.store.close()
    return root, name


def voila_command(port: int) -> list[str]:
    """Voilà's argv: no token on it (``JUPYTER_TOKEN`` in the environment carries it)."""
    return [sys.executable, "-m", "voila", str(APP), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0", "--Voila.auto_token=True", "--strip_sources=True",
            "--show_tracebacks=False", "--VoilaConfiguration.file_allowlist=[]"]


def app_env(workspace: str | Path, reviewer: str, round: int | None, token: str) -> dict:
    """The server's environment, which its kernels inherit: the launch identity and the token."""
    repo = str(KIT_ROOT)
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCH_ENV and k not in ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE")}
    env.update({"PROMEDICAL_WORKSPACE": str(Path(workspace).resolve()), "PROMEDICAL_REVIEWER": reviewer,
                "JUPYTER_TOKEN": token, "PYTHONPATH": os.pathsep.join(
                    [repo] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))})
    if round is not None:
        env["PROMEDICAL_ROUND"] = str(round)
    return env


def _die_with_parent(parent: int):
    """preexec_fn: on Linux, SIGTERM this child when the process that started it dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not between fork and exec
    except (OSError, AttributeError):
        return None

    def set_pdeathsig():
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return set_pdeathsig


def launch(command: list[str], env: dict, *, cwd: str | Path | None = None, log=None) -> subprocess.Popen:
    """Start a server child in its own process group (so a terminal's Ctrl-C reaches only us and
    :func:`stop` takes down all it started); it dies with this process on Linux."""
    return subprocess.Popen(command, env=env, cwd=None if cwd is None else str(cwd), stdout=log,
                            stderr=subprocess.STDOUT if log else None, start_new_session=True,
                            preexec_fn=_die_with_parent(os.getpid()))


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM the child's process group, wait ``grace_s``, then SIGKILL it; returns its exit code."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def start(workspace: str | Path, reviewer: str, round: int | None = None, *, port: int | None = None,
          token: str | None = None, log=None) -> tuple[subprocess.Popen, str]:
    """Start Voilà on the app (own process group); returns (process, URL with the token)."""
    _, name = _checked(workspace, reviewer, round)
    port, token = port or free_port(), token or secrets.token_urlsafe(24)
    proc = launch(voila_command(port), app_env(workspace, name, round, token), cwd=NOTEBOOK_DIR, log=log)
    proc.reviewer = name
    return proc, f"http://127.0.0.1:{port}/?token={token}"


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def supervise(proc: subprocess.Popen, signals=(signal.SIGTERM, signal.SIGHUP, signal.SIGINT)) -> int:
    """Wait for the server; a signal to this process (SIGTERM, SIGHUP, Ctrl-C) stops the server's
    whole process group first. Returns the server's exit code, or 128 + the signal's number."""
    def handler(signum, frame):
        raise _Stopped(signum)

    if threading.current_thread() is not threading.main_thread():
        signals = ()  # only the main thread may set handlers; the finally below still stops the server
    previous = {}
    try:
        for s in signals:
            previous[s] = signal.signal(s, handler)
        return proc.wait()
    except (_Stopped, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        for s in signals:  # a second signal while stopping must not leave the server behind
            signal.signal(s, signal.SIG_IGN)
        stop(proc)
        return 0 if signum == signal.SIGINT else 128 + signum
    finally:
        if proc.poll() is None:
            stop(proc)
        for s, h in previous.items():
            signal.signal(s, h)


def serve(workspace: str | Path, reviewer: str, round: int | None = None, *, port: int | None = None,
          open_browser: bool = True) -> int:
    """Run the app until Ctrl-C, SIGTERM or SIGHUP; opens the browser on it unless told not to."""
    proc, url = start(workspace, reviewer, round, port=port)
    try:
        print(f"team review app for {proc.reviewer}: {url}  (Ctrl-C stops it)", flush=True)
        if open_browser:
            webbrowser.open(url)
    except BaseException:
        stop(proc)
        raise
    return supervise(proc)

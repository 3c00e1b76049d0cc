"""``promedical review``: serve the team review app (notebooks/review_app.ipynb) with Voilà.

Voilà runs the notebook in a kernel and shows only its outputs (the widgets): no code cell, no
editor, no file browser — a clinician sees the app and nothing else. It binds to 127.0.0.1 and
asks for a token (random, printed in the URL); the kernel gets the workspace, the reviewer and the
round through the environment. See docs/02_review.md, *Team review*, for why Voilà.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import webbrowser
from pathlib import Path

from promedical.app.notebooks import NOTEBOOK_DIR
from promedical.core.provenance import KIT_ROOT
from promedical.core.workspace import Workspace
from promedical.review.team import DB_NAME as TEAM_DB
from promedical.review.team import TeamError, TeamStore
from promedical.rubrics.store import DB_NAME as STORE_DB
from promedical.rubrics.store import RubricStore

APP = NOTEBOOK_DIR / "review_app.ipynb"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_workspace(workspace: str | Path, reviewer: str, round: int | None) -> Path:
    """The workspace's store folder; ValueError (one line) when there is nothing to review."""
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise ValueError("--reviewer: give your name (non-empty)")
    ws = Path(workspace)
    if not ws.is_dir():
        raise ValueError(f"--workspace: {ws} is not a folder")
    root = Workspace(Workspace.folder(ws)).rubrics  # checked, not created
    if not (root / STORE_DB).is_file() or not (root / TEAM_DB).is_file():
        raise ValueError(f"--workspace: {ws} holds no review round (open one with promedical.review.rounds or notebook 02b)")
    team = TeamStore(RubricStore(root))
    try:
        team.round(round)
    except TeamError as exc:
        raise ValueError(f"--round: {exc}") from None
    finally:
        team.close()
    return root


def voila_command(port: int, token: str) -> list[str]:
    return [sys.executable, "-m", "voila", str(APP), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0", f"--token={token}", "--strip_sources=True", "--show_tracebacks=False",
            "--VoilaConfiguration.file_allowlist=[]"]


def app_env(workspace: str | Path, reviewer: str, round: int | None) -> dict:
    repo = str(KIT_ROOT)
    env = {**os.environ, "PROMEDICAL_WORKSPACE": str(Path(workspace).resolve()),
           "PROMEDICAL_REVIEWER": reviewer.strip(), "PYTHONPATH": os.pathsep.join(
               [repo] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    env.pop("PROMEDICAL_ROUND", None)
    if round is not None:
        env["PROMEDICAL_ROUND"] = str(round)
    return env


def start(workspace: str | Path, reviewer: str, round: int | None = None, *, port: int | None = None,
          token: str | None = None, log=None) -> tuple[subprocess.Popen, str]:
    """Start Voilà on the app (own process group); returns (process, URL with the token)."""
    check_workspace(workspace, reviewer, round)
    port, token = port or free_port(), token or secrets.token_urlsafe(24)
    proc = subprocess.Popen(voila_command(port, token), env=app_env(workspace, reviewer, round),
                            cwd=str(NOTEBOOK_DIR), stdout=log, stderr=subprocess.STDOUT if log else None,
                            start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/?token={token}"


def serve(workspace: str | Path, reviewer: str, round: int | None = None, *, port: int | None = None,
          open_browser: bool = True) -> int:
    """Run the app until Ctrl-C; opens the browser on it unless told not to."""
    proc, url = start(workspace, reviewer, round, port=port)
    print(f"team review app for {reviewer.strip()}: {url}  (Ctrl-C stops it)", flush=True)
    if open_browser:
        webbrowser.open(url)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=15)
        return 0

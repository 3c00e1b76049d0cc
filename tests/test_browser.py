"""Real browser test of notebook 02's reviewer widget, in JupyterLab, driven by Playwright.

What it does, end to end:

1. imports three training rubrics as drafts into the store of a temporary workspace;
2. starts JupyterLab on 127.0.0.1 (free port, random token) with ``PROMEDICAL_WORKSPACE`` pointing at
   that workspace, its root a temporary copy of ``notebooks/``;
3. opens ``02_rubric_refinement.ipynb`` in Debian's ``/usr/bin/chromium`` (headless, launched through
   Playwright's Python package; no browser is ever downloaded), runs all cells, edits criterion p1 of the
   first rubric in the ``RubricReviewer`` widget and clicks *Approve rubric*;
4. checks the append-only store ON DISK: the first rubric's latest revision is ``approved``, written by the
   reviewer, with p1's new text;
5. saves a screenshot to ``runs/screenshots/reviewer_jupyterlab.png`` (git-ignored) and to pytest's tmp dir.

Every wait is bounded; the server is always killed. ``/usr/bin/chromium`` missing is a FAILURE, not a skip:
``.ci/run`` installs it (``apt-get install chromium``).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from promedical.core.data import load_split
from promedical.rubrics.store import open_store

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "02_rubric_refinement.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REVIEWER = "demo-clinician"       # the notebook's default `reviewer` parameter
SERVER_START_S = 60               # JupyterLab answering /api/status
KERNEL_RUN_S = 120                # kernel start + run-all until the widget renders and the kernel is idle
ROUND_TRIP_S = 30                 # one widget edit / click reaching the kernel and coming back

pytestmark = [pytest.mark.browser, pytest.mark.subprocess]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium; missing is a failure (checked before JupyterLab is started)."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`); "
        ".ci/run does this before `make test-all`. The test never downloads a browser.")
    return CHROMIUM


@pytest.fixture
def workspace(tmp_path):
    """A workspace whose store holds three training rubrics as drafts; returns (path, first rubric id)."""
    ws = tmp_path / "workspace"
    rubrics = [r for r in load_split("train") if any(c.id == "p1" for c in r.criteria)][:3]
    assert len(rubrics) == 3, "need three training rubrics with a criterion p1"
    store = open_store(ws)
    assert store.import_rubrics(rubrics, author="browser-test-import") == 3
    assert [rev.status for rev in store.current().values()] == ["draft"] * 3
    return ws, rubrics[0].id


@pytest.fixture
def jupyterlab(tmp_path, workspace):
    """JupyterLab serving a copy of notebooks/; yields (base url, token). Killed at teardown, always."""
    ws, _ = workspace
    root = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", root)
    state = tmp_path / "jupyter-state"        # keep the user's Jupyter config/settings/workspaces out of it
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ,
           "PROMEDICAL_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "JUPYTER_CONFIG_DIR": str(state / "config"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"), "IPYTHONDIR": str(state / "ipython")}
    # "Never" fetch news: no notification toast over the page (and no request out).
    news = state / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}', encoding="utf-8")
    log_path = tmp_path / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"]
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode} before answering; "
                            f"log {log_path}:\n{tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer on {base} within {SERVER_START_S} s; "
                            f"log {log_path}:\n{tail(log_path)}")
            time.sleep(0.5)
        yield base, token, log_path
    finally:
        # The server and its kernels are in their own process group: end the group, then make sure.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def cell_outputs(page) -> str:
    """Text of every output area in the notebook (for failure messages: tracebacks show up here)."""
    try:
        texts = page.locator(".jp-OutputArea-output").all_inner_texts()
    except Exception as exc:  # noqa: BLE001 - only used to enrich a failure message
        return f"<cannot read outputs: {exc}>"
    return "\n---\n".join(t.strip()[-1500:] for t in texts if t.strip()) or "<no outputs>"


def test_reviewer_widget_edit_and_approve_in_jupyterlab(chromium, jupyterlab, workspace, tmp_path):
    from playwright.sync_api import TimeoutError as PWTimeout
    from playwright.sync_api import sync_playwright

    base, token, log_path = jupyterlab
    ws, first_id = workspace
    new_text = f"Advises calling 999 at once and noting when symptoms began (browser edit {secrets.token_hex(3)})."
    screenshot = ROOT / "runs" / "screenshots" / "reviewer_jupyterlab.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)

    def fail(msg, page=None):
        extra = f"\nnotebook outputs:\n{cell_outputs(page)}" if page is not None else ""
        if page is not None:
            try:
                page.screenshot(path=str(tmp_path / "failure.png"))
                extra += f"\nscreenshot of the failure: {tmp_path / 'failure.png'}"
            except Exception:  # noqa: BLE001
                pass
        pytest.fail(f"{msg}{extra}\nJupyterLab log tail ({log_path}):\n{tail(log_path, 2500)}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.set_default_timeout(ROUND_TRIP_S * 1000)
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", timeout=60_000)

            # 1. JupyterLab is up with the notebook open as the current widget, its kernel started.
            try:
                page.wait_for_function(
                    """name => {
                        const app = window.jupyterapp;
                        const w = app && app.shell && app.shell.currentWidget;
                        const k = w && w.sessionContext && w.sessionContext.session
                                  && w.sessionContext.session.kernel;
                        return !!(w && w.context && w.context.path.endsWith(name) && k && k.status === 'idle');
                    }""", arg=NOTEBOOK, timeout=KERNEL_RUN_S * 1000)
            except PWTimeout:
                fail(f"the notebook did not open with an idle kernel within {KERNEL_RUN_S} s", page)

            # 2. Run all cells; wait for the widget and for the kernel to finish every cell.
            t0 = time.monotonic()
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            app = page.locator(".pm-reviewer-app")
            try:
                app.wait_for(state="visible", timeout=KERNEL_RUN_S * 1000)
            except PWTimeout:
                fail(f"the reviewer widget (.pm-reviewer-app) did not render within {KERNEL_RUN_S} s of run-all", page)
            left_ms = max(5_000, int((KERNEL_RUN_S - (time.monotonic() - t0)) * 1000))
            try:
                page.wait_for_function(
                    """() => {
                        const w = window.jupyterapp.shell.currentWidget;
                        const k = w.sessionContext.session && w.sessionContext.session.kernel;
                        const busy = [...document.querySelectorAll('.jp-InputPrompt')]
                                     .some(p => p.textContent.includes('*'));
                        return k && k.status === 'idle' && !busy;
                    }""", timeout=left_ms)
            except PWTimeout:
                fail("the kernel did not finish running all cells in time", page)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
            if errors.count():
                fail("a notebook cell raised an error", page)
            position = app.locator(".pm-position")
            assert first_id in position.inner_text(), (
                f"the widget should open the first draft {first_id}, shows: {position.inner_text()!r}")

            # 3. Edit p1's text; it must reach the kernel: the diff (rendered kernel-side) shows it.
            textarea = app.locator(".pm-cid-p1 .pm-criterion-text textarea")
            expect_count = textarea.count()
            assert expect_count == 1, f"expected one textarea for criterion p1, found {expect_count}"
            textarea.fill(new_text)
            textarea.press("Tab")   # blur: also fires the `change` event
            try:
                app.locator(".pm-diff").filter(has_text=new_text).wait_for(timeout=ROUND_TRIP_S * 1000)
            except PWTimeout:
                fail(f"the edit of p1 did not reach the kernel within {ROUND_TRIP_S} s "
                     f"(diff shows {app.locator('.pm-diff').inner_text()!r})", page)

            page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
            app.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(tmp_path / "reviewer_jupyterlab_edited.png"))   # p1 edited, diff shown

            # 4. Approve; the status line reports the new revision.
            app.locator(".pm-approve button, button.pm-approve").first.click()
            status = app.locator(".pm-status")
            try:
                status.filter(has_text="approved").wait_for(timeout=ROUND_TRIP_S * 1000)
            except PWTimeout:
                fail(f"status did not show 'approved' within {ROUND_TRIP_S} s after Approve "
                     f"(status {status.inner_text()!r}, problems {app.locator('.pm-problems').inner_text()!r})",
                     page)
            status_text = status.inner_text()
            assert "approved (revision 2)" in status_text, f"unexpected status line: {status_text!r}"
            assert "1 / 3 reviewed" in app.locator(".pm-progress").inner_text()

            # 5. Screenshot: the whole widget (next rubric opened, status line "approved (revision 2)").
            app.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)   # let the collapse/scroll repaint
            page.screenshot(path=str(screenshot))
            shutil.copy(screenshot, tmp_path / screenshot.name)
            print(f"\nscreenshot: {screenshot} (copy: {tmp_path / screenshot.name}; "
                  f"before approving: {tmp_path / 'reviewer_jupyterlab_edited.png'})")
        finally:
            browser.close()

    # 6. The store on disk (a fresh reader, not the kernel's object) holds the approved revision.
    history = open_store(ws).history(first_id)
    assert [h.status for h in history] == ["draft", "approved"], [(h.revision, h.status) for h in history]
    latest = history[-1]
    assert latest.author == REVIEWER, f"latest revision author {latest.author!r}, expected {REVIEWER!r}"
    p1 = next(c for c in latest.rubric.criteria if c.id == "p1")
    assert p1.text == new_text, f"p1 text on disk {p1.text!r} != typed {new_text!r}"
    assert any(ch["criterion"] == "p1" and ch["field"] == "text" and ch["new"] == new_text
               for ch in latest.changes), f"revision changes lack the p1 text edit: {latest.changes}"
    others = [rev.status for rid, rev in open_store(ws).current().items() if rid != first_id]
    assert others == ["draft", "draft"], f"only the first rubric should change, others: {others}"

"""Real-browser test of the team review app (`promedical review`, served by Voilà), two reviewers blind.

1. A workspace with round 1: three training rubrics as drafts (new ids), rubric A assigned to ana
   AND ben (blind double review), B to ana, C to ben.
2. Two Voilà servers, as ``promedical review`` starts them (127.0.0.1, a token), one per reviewer,
   and two browser contexts of Debian's ``/usr/bin/chromium`` (Playwright; no browser download).
3. Both open rubric A at once: both see the draft. ana edits p1's text, reloads the page (the edit
   comes back from the autosave) and approves with Shift+A;
   ben — still looking at the draft — re-enables the Reviewer field in the page and types ana's name
   (refused by the kernel: he stays ben, ana's review is not shown), then rejects criterion b1 with
   the keyboard (j…, r) and approves.
   Both reviews land in the team file; the store's latest revision of A is still the draft.
4. Agreement is computed (Cohen's kappa and Krippendorff's alpha) from the two reviews.
5. A third clinician (cy) opens the app, adjudicates A side by side (ana's p1, ben's removal of b1)
   with a reason; A becomes approved (action ``adjudication``); the history keeps both reviews.
6. The next round's few-shot pool holds the adjudicated rubric A.

Screenshots of each view go to ``runs/screens/`` (git-ignored) and pytest's tmp dir; the test
prints their paths and the agreement / round numbers.
"""
from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, tail

from promedical.app.review_server import start
from promedical.core.data import load_split
from promedical.review.queues import assign
from promedical.review.reviewer_agreement import round_agreement
from promedical.review.rounds import open_round, round_metrics, round_pool
from promedical.review.team import TeamStore
from promedical.rubrics.store import open_store

ROOT = Path(__file__).resolve().parent.parent
SCREENS = ROOT / "runs" / "screens"
APP_S = 150          # Voilà start + kernel + the app rendered
ROUND_TRIP_S = 30    # one widget action reaching the kernel and coming back

pytestmark = [pytest.mark.browser, pytest.mark.subprocess]


@pytest.fixture
def round1(tmp_path):
    ws = tmp_path / "workspace"
    base = [r for r in load_split("train") if {"p1", "b1"} <= {c.id for c in r.criteria}][:3]
    assert len(base) == 3
    drafts = [replace(r, id=f"round1-{r.id}") for r in base]
    store = open_store(ws)
    team = TeamStore(store)
    assert open_round(store, team, drafts, round_pool(store)) == 1
    a, b, c = (r.id for r in drafts)
    assign(store, team, {a: ["ana", "ben"], b: ["ana"], c: ["ben"]})
    return ws, drafts


@pytest.fixture
def servers(tmp_path, round1):
    """Start one Voilà per name on demand; all are killed at teardown."""
    ws, _ = round1
    procs = []

    def launch(name):
        log = tmp_path / f"voila-{name}.log"
        with open(log, "wb") as fh:
            proc, url = start(ws, name, log=fh)
        procs.append(proc)
        # the token is not on Voilà's command line (any local user can read argv with ps)
        token = url.split("?token=")[1]
        assert token.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        return url, log

    yield launch
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except Exception:  # noqa: BLE001
            os.killpg(proc.pid, signal.SIGKILL)


def test_two_reviewers_blind_then_adjudication_then_next_round(round1, servers, tmp_path):
    from playwright.sync_api import TimeoutError as PWTimeout
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does it)"
    ws, drafts = round1
    rid = drafts[0].id
    draft_p1 = next(c.text for c in drafts[0].criteria if c.id == "p1")
    ana_p1 = "Tells him to call 999 for an ambulance now, even though the symptoms have eased (ana)."
    SCREENS.mkdir(parents=True, exist_ok=True)
    shots = []

    def shot(page, name):
        path = SCREENS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, tmp_path / path.name)
        shots.append(path)

    (url_ana, log_ana), (url_ben, log_ben) = servers("ana"), servers("ben")

    def open_app(browser, url, log):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1500})
        page = ctx.new_page()
        page.set_default_timeout(ROUND_TRIP_S * 1000)
        deadline = time.monotonic() + APP_S
        while True:
            try:
                page.goto(url, timeout=APP_S * 1000)
                page.locator(".pm-team-app").wait_for(timeout=APP_S * 1000)
                return ctx, page
            except Exception as exc:  # noqa: BLE001 - the server may still be starting
                if time.monotonic() > deadline:
                    pytest.fail(f"the app did not render within {APP_S} s ({exc}); log:\n{tail(log)}")
                time.sleep(2)

    def wait_text(locator, text, what, log):
        try:
            locator.filter(has_text=text).wait_for(timeout=ROUND_TRIP_S * 1000)
        except PWTimeout:
            pytest.fail(f"{what}: {text!r} not shown within {ROUND_TRIP_S} s (shows {locator.inner_text()!r}); "
                        f"log:\n{tail(log)}")

    def keys(page, *presses):
        page.locator(".pm-position").click()  # focus on the page, not in a field
        for k in presses:
            page.keyboard.press(k)
            page.wait_for_timeout(150)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            ctx_a, ana = open_app(browser, url_ana, log_ana)
            ctx_b, ben = open_app(browser, url_ben, log_ben)
            # bound to 127.0.0.1; without the token the app is not served (login page instead)
            assert url_ana.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(url_ana.split("?")[0], timeout=30) as resp:
                assert "/login" in resp.geturl() and "pm-team-app" not in resp.read().decode()
            # no code anywhere: Voilà shows outputs only
            assert ana.locator(".jp-InputArea-editor, .jp-InputPrompt").count() == 0
            for page in (ana, ben):
                assert rid in page.locator(".pm-team-reviewer .pm-position").inner_text()
                assert page.locator(".pm-cid-p1 .pm-criterion-text textarea").input_value() == draft_p1
            shot(ana, "1_queue_ana")

            # ana edits p1 and approves with Shift+A
            ta = ana.locator(".pm-team-reviewer .pm-cid-p1 .pm-criterion-text textarea")
            ta.fill(ana_p1)
            ta.press("Tab")
            wait_text(ana.locator(".pm-team-reviewer .pm-diff"), ana_p1, "ana's edit in the diff", log_ana)
            # nothing typed is lost: a reload (a new kernel) restores the edit from the autosave
            ana.reload()
            ana.locator(".pm-team-app").wait_for(timeout=APP_S * 1000)
            wait_text(ana.locator(".pm-team-reviewer .pm-status"), "restored unsaved edits", "autosave", log_ana)
            assert ana.locator(".pm-team-reviewer .pm-cid-p1 .pm-criterion-text textarea").input_value() == ana_p1
            keys(ana, "Shift+A")
            wait_text(ana.locator(".pm-team-reviewer .pm-status"), "submitted review #1", "ana's submission", log_ana)
            wait_text(ana.locator(".pm-team-reviewer .pm-progress"), "1 / 2 submitted", "ana's progress", log_ana)
            ana.locator(".pm-team-reviewer .pm-status").scroll_into_view_if_needed()
            shot(ana, "2_queue_ana_after_submit")

            # ben still sees the draft (blind), even after a reload
            ben.reload()
            ben.locator(".pm-team-app").wait_for(timeout=APP_S * 1000)
            assert ben.locator(".pm-team-reviewer .pm-cid-p1 .pm-criterion-text textarea").input_value() == draft_p1
            assert ana_p1 not in ben.locator(".pm-team-app").inner_text()
            # the field is disabled only in the browser: ben re-enables it and types ana's name — the
            # kernel refuses the change (identity from the launch), the page shows ben again, one line
            field = ben.locator(".pm-team-reviewer .pm-reviewer input")
            field.evaluate("e => { e.disabled = false; }")
            field.fill("ana")
            field.press("Enter")
            wait_text(ben.locator(".pm-app-status"), "refused a change from the page", "the guard", log_ben)
            ben.wait_for_function("() => document.querySelector('.pm-team-reviewer .pm-reviewer input').value === 'ben'",
                                  timeout=ROUND_TRIP_S * 1000)
            assert ana_p1 not in ben.locator(".pm-team-app").inner_text()
            assert ben.locator(".pm-team-reviewer .pm-cid-p1 .pm-criterion-text textarea").input_value() == draft_p1
            idx = ben.evaluate("() => [...document.querySelectorAll('.pm-team-reviewer .pm-criterion')]"
                               ".findIndex(e => e.classList.contains('pm-cid-b1'))")
            assert idx >= 0
            keys(ben, *(["j"] * (idx + 1)), "r")
            try:
                ben.locator(".pm-team-reviewer .pm-cid-b1.pm-rejected").wait_for(timeout=ROUND_TRIP_S * 1000)
            except PWTimeout:
                pytest.fail(f"keys j…r did not reject b1; log:\n{tail(log_ben)}")
            keys(ben, "c")  # compact view
            ben.locator(".pm-compact-on").wait_for(timeout=ROUND_TRIP_S * 1000)
            assert not ben.locator(".pm-team-reviewer .pm-diff").is_visible()
            shot(ben, "3_queue_ben_compact_blind")
            keys(ben, "Shift+A")
            wait_text(ben.locator(".pm-team-reviewer .pm-status"), "submitted review #2", "ben's submission", log_ben)
            ctx_a.close()
            ctx_b.close()

            # both reviews landed in the team file; the store still shows the draft
            store = open_store(ws)
            team = TeamStore(store)
            reviews = team.reviews(1, rubric_id=rid)
            assert [(r.reviewer, r.decision) for r in reviews] == [("ana", "approved"), ("ben", "approved")]
            assert {c.id: c.text for c in reviews[0].rubric.criteria}["p1"] == ana_p1
            assert "b1" not in {c.id for c in reviews[1].rubric.criteria}
            assert {c.id: c.text for c in reviews[1].rubric.criteria}["p1"] == draft_p1
            assert store.latest(rid).revision == 1 and store.latest(rid).status == "draft"
            agreement = round_agreement(team, 1)
            crit = agreement["criterion_decision"]
            n = len(drafts[0].criteria)
            assert crit["units"] == n and crit["observed_agreement"] == pytest.approx((n - 2) / n)
            assert crit["kappa"] is not None and crit["alpha"] is not None and crit["kappa"] < 1

            # cy adjudicates: start from ana's review, take ben's removal of b1
            url_cy, log_cy = servers("cy")
            ctx_c, cy = open_app(browser, url_cy, log_cy)
            cy.locator(".lm-TabBar-tab, .p-TabBar-tab").filter(has_text="Adjudicate").click()
            adj = cy.locator(".pm-adjudication")
            adj.locator(".pm-adj-pick").first.wait_for(timeout=ROUND_TRIP_S * 1000)
            assert ana_p1 in adj.inner_text() and "(removed)" in adj.inner_text()
            adj.locator(".pm-adj-pick-b1 select").select_option("ben")
            adj.locator(".pm-adj-reason textarea").fill("ana's p1 is explicit about 999; b1 adds nothing in an emergency (ben)")
            adj.locator(".pm-adj-reason textarea").press("Tab")
            cy.wait_for_timeout(500)
            shot(cy, "4_adjudication_cy")
            adj.locator(".pm-adj-resolve button, button.pm-adj-resolve").first.click()
            wait_text(adj.locator(".pm-adj-status"), "resolved", "adjudication", log_cy)
            cy.locator(".lm-TabBar-tab, .p-TabBar-tab").filter(has_text="Rounds").click()
            cy.locator(".pm-rounds-chart .js-plotly-plot").first.wait_for(timeout=ROUND_TRIP_S * 1000)
            wait_text(cy.locator(".pm-rounds-table"), "round", "rounds table", log_cy)
            shot(cy, "5_rounds_cy")
            ctx_c.close()
        finally:
            browser.close()

    latest = store.latest(rid)
    assert (latest.status, latest.action, latest.author, latest.revision) == ("approved", "adjudication", "cy", 2)
    final = {c.id: c.text for c in latest.rubric.criteria}
    assert final["p1"] == ana_p1 and "b1" not in final
    assert "review #1" in latest.reason and "review #2" in latest.reason
    assert [a.choice for a in team.adjudications(1)] == ["merge"]

    # the approved rubric joins the few-shot pool of the next round
    pool = round_pool(store)
    assert next(r for r in pool.rubrics if r.id == rid).to_dict() == latest.rubric.to_dict()
    nxt = [replace(r, id=r.id.replace("round1-", "round2-")) for r in drafts]
    assert open_round(store, team, nxt, pool) == 2
    assert rid in team.round(2)["pool_ids"]
    m1 = round_metrics(store, team, 1)
    print(f"\nscreens: {', '.join(map(str, shots))}")
    print(f"agreement (round 1, criterion decision): units {crit['units']}, observed {crit['observed_agreement']:.3f}, "
          f"kappa {crit['kappa']:.3f}, alpha {crit['alpha']:.3f}; rubric decision {agreement['rubric_decision']}")
    print(f"round 1: resolved {m1['resolved']}/{m1['rubrics']}, pass rate {m1['pass_rate']}, "
          f"edit rate per tier {m1['edit_rate_per_tier']}, most-changed {m1['most_changed_dimensions']}; "
          f"round 2 pool {len(team.round(2)['pool_ids'])} rubrics incl. {rid}")

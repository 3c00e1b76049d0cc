"""The team review app: my queue (blind review), adjudication, rounds — ipywidgets over promedical's team modules.

``review_app(store, reviewer)`` is what ``promedical review`` serves with Voilà (no code visible).
Every text is escaped (``html.escape``); CSS classes ``pm-...`` let the browser test find controls.

Keyboard shortcuts (ignored while typing in a text field; Esc leaves the field):
``j``/``k`` next/previous criterion, ``a`` accept it, ``r`` reject it, ``n``/``p`` next/previous
rubric, ``Shift+A`` approve the rubric (submit the review), ``c`` compact view. They are one small
script, :data:`SHORTCUTS_JS`, that clicks the same buttons a mouse would.

What the page can do to the kernel is checked here, because the page is not trusted (a reviewer
can send any widget message from the browser console):

- **Identity from the launch.** The reviewer (and round) come from the server's launch —
  :func:`app_from_launch` reads the environment ``promedical review`` set for the kernel — as the team
  spells the name (``TeamStore.canonical``). The *Reviewer* field only shows it: a change to it, from
  the page or in the kernel, is put back and said in one line; every session, queue and submission
  uses :attr:`TeamReviewer.identity`, never a widget's value.
- **Every state change from the page is checked** (:class:`PageGuard`): a control accepts only its
  input trait (a text's ``value``, a dropdown's ``index``, a tab's ``selected_index``…) and nothing
  while it is disabled or hidden; a click on a disabled or hidden button is refused; anything else
  (``disabled``, ``options``, ``description``, layouts, styles, HTML) is refused, the page is put back
  in sync, and the app says so in one line.
- **Errors are one line**: an exception in a handler (a damaged database among them) is shown as one
  line in the app, never as a traceback or a raw ``sqlite3.DatabaseError``.
"""
from __future__ import annotations

import os

import ipywidgets as W

from promedical.core.rubric import RubricError
from promedical.review.adjudication import ABSENT, disagreements, resolve, side_by_side
from promedical.review.names import same_person
from promedical.review.queues import BlindReviewSession, progress, queue
from promedical.review.rounds import rounds_figure, rounds_table
from promedical.review.team import TeamError, TeamStore
from promedical.rubrics.store import RubricStore, StaleRevisionError, open_store
from widgets.page_guard import PageGuard, one_line
from widgets.reviewer import RubricReviewer, esc, table

SHORTCUTS_HELP = ("Keys: j/k next/previous criterion · a accept · r reject · n/p next/previous rubric · "
                  "Shift+A approve rubric · c compact view · Esc leaves a text field")

SHORTCUTS_JS = r"""
(function () {
  if (window.__pmShortcuts) return;
  window.__pmShortcuts = true;
  let focus = -1;
  const rows = () => [...document.querySelectorAll('.pm-team-reviewer .pm-criterion')];
  const click = (sel) => { const b = document.querySelector(sel); if (b) { b.click(); return true; } return false; };
  const mark = () => rows().forEach((r, i) => r.classList.toggle('pm-focus', i === focus));
  const decide = (label) => {
    const r = rows()[focus]; if (!r) return;
    const b = [...r.querySelectorAll('.pm-criterion-decision button')].find(x => x.textContent.trim() === label);
    if (b) b.click();
  };
  document.addEventListener('keydown', (e) => {
    const t = e.target, tag = (t && t.tagName || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || tag === 'select' || (t && t.isContentEditable)) {
      if (e.key === 'Escape') t.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || !document.querySelector('.pm-team-reviewer')) return;
    const n = rows().length;
    let done = true;
    if (e.key === 'j') { focus = Math.min(n - 1, focus + 1); mark(); rows()[focus] && rows()[focus].scrollIntoView({block: 'nearest'}); }
    else if (e.key === 'k') { focus = Math.max(0, focus - 1); mark(); rows()[focus] && rows()[focus].scrollIntoView({block: 'nearest'}); }
    else if (e.key === 'a') decide('accept');
    else if (e.key === 'r') decide('reject');
    else if (e.key === 'n') { focus = -1; click('.pm-team-reviewer .pm-next'); }
    else if (e.key === 'p') { focus = -1; click('.pm-team-reviewer .pm-prev'); }
    else if (e.key === 'A') click('.pm-team-reviewer .pm-approve');
    else if (e.key === 'c') click('.pm-compact');
    else done = false;
    if (done) e.preventDefault();
  });
  const style = document.createElement('style');
  style.textContent = '.pm-criterion.pm-focus{outline:2px solid #1a73e8;background:#eef4ff}' +
                      '.pm-rejected{background:#fbeaea}';
  document.head.appendChild(style);
})();
"""


def shortcuts():
    """The keyboard shortcuts as a display object (a script; run once per page)."""
    from IPython.display import Javascript

    return Javascript(SHORTCUTS_JS)


class TeamReviewer(RubricReviewer):
    """A reviewer's queue of a round, reviewed blind (each rubric from its draft revision)."""

    def __init__(self, store: RubricStore, team: TeamStore, reviewer: str, round: int | None = None, *,
                 guard: PageGuard | None = None):
        self.team, self.round = team, team.round(round)["round"]
        self.identity = team.canonical(reviewer)  # fixed for the app's life: who the launch says
        self.guard = guard or PageGuard(lambda text, error=False: self._say(text, error), self.identity)
        ids = queue(team, self.identity, self.round)
        if not ids:
            raise TeamError(f"{self.identity!r} has no rubric to review in round {self.round}")
        super().__init__(store, self.identity, ids)
        self.widget.add_class("pm-team-reviewer")
        self.reviewer_name.disabled = True
        self.reviewer_name.unobserve_all("value")  # the base app re-opens the queue under a typed name
        self.reviewer_name.observe(self._keep_identity, names="value")
        for b in (self.save_button, self.rebase_button):
            b.layout.display = "none"
        self.approve_button.description = "Approve rubric (Shift+A)"
        self.approve_button.layout.width = "auto"
        self.reject_button.description = "Reject rubric"
        self.next_button.description = "Next ▶ (n)"
        self.prev_button.description = "◀ Previous (p)"
        self.compact = W.ToggleButton(value=False, description="Compact view (c)")
        self.compact.add_class("pm-compact")
        self.compact.observe(lambda ch: self._apply_compact(), names="value")
        self.help = W.HTML(f"<small>{esc(SHORTCUTS_HELP)}</small>")
        self.help.add_class("pm-help")
        self.widget.children = (W.HBox([self.compact, self.help]),) + tuple(self.widget.children)
        # the parts a compact view hides (add-criterion row, renormalise, diff and history)
        kids = list(self.widget.children)
        self._verbose = [k for k in kids if isinstance(k, W.HBox) and self.add_button in k.children]
        self._verbose += [self.renormalise_button, self.diff, self.history, self.weights]
        self._verbose += [k for k in kids if isinstance(k, W.HTML) and k.value in (
            "<b>Changes against the stored revision</b>", "<b>History</b>")]
        said = self.status.value  # e.g. "restored unsaved edits": keep it through the re-render
        self._render(rebuild=True)
        self.status.value = said
        self.guard.watch(self.widget)

    def _keep_identity(self, change) -> None:
        if change["new"] != self.identity:
            self.reviewer_name.value = self.identity
            self._say(f"the reviewer is {self.identity}, set when the app was started: it cannot be changed here",
                      error=True)

    # hooks of RubricReviewer: the launch identity, never the field's value
    def _first_index(self, statuses: dict) -> int:
        done = {r.rubric_id for r in self.team.reviews(self.round, reviewer=self.identity)}
        return next((i for i, rid in enumerate(self.ids) if rid not in done), 0)

    def _session(self, rubric_id: str, reviewer: str) -> BlindReviewSession:
        return BlindReviewSession(self.store, self.team, rubric_id, self.identity, round=self.round)

    def reviewed(self) -> int:
        return progress(self.team, self.identity, self.round)["submitted"]

    def _apply_compact(self) -> None:
        hide = "none" if self.compact.value else None
        for w in self._verbose:
            w.layout.display = hide
        for row in self.rows.values():
            row.box.children[1].layout.display = hide  # dimension / adheres / violates
        (self.widget.add_class if self.compact.value else self.widget.remove_class)("pm-compact-on")

    def _render(self, rebuild: bool = False) -> None:
        super()._render(rebuild)
        if not hasattr(self, "compact"):
            return
        s = self.session
        self.rebase_button.layout.display = "none"
        submitted = s.submitted is not None
        self.approve_button.disabled = self.reject_button.disabled = submitted
        if rebuild:
            self.progress.value = f"{self.reviewed()} / {len(self.ids)} submitted · round {self.round}"
            self._apply_compact()
        if submitted:
            self.position.value += f" · <b>you submitted: {esc(s.submitted.decision)}</b> (blind: read-only)"
        if rebuild and hasattr(self, "guard"):
            self.guard.watch(self.widget)  # the new criterion rows

    def _save(self, status: str) -> None:
        try:
            review = self.session.save(status)
        except RubricError as exc:
            self._render()
            self._say(f"not submitted: {len(exc.problems)} problem(s) to fix, listed below", error=True)
            return
        except (TeamError, StaleRevisionError, ValueError) as exc:
            self._say(f"not submitted: {exc}", error=True)
            return
        landed = self.session.finalized
        self._open(min(self.index + 1, len(self.ids) - 1))
        what = (f"landed as revision {landed.revision} ({landed.action})" if landed is not None
                else "waiting for the other reviewer or an adjudicator")
        self._say(f"submitted review #{review.seq} of {review.rubric_id}: {review.decision}; {what}")


class AdjudicationView:
    """Disagreements of a round side by side; pick a review or merge field by field, with a reason."""

    def __init__(self, store: RubricStore, team: TeamStore, adjudicator: str, round: int | None = None, *,
                 guard: PageGuard | None = None):
        self.store, self.team, self.adjudicator = store, team, team.canonical(adjudicator)
        self.guard = guard or PageGuard(self._say, self.adjudicator)
        self.round = team.round(round)["round"]
        self.choose = W.Dropdown(description="Rubric")
        self.choose.add_class("pm-adj-rubric")
        self.table = W.VBox()
        self.table.add_class("pm-adj-table")
        self.decision = W.HTML()
        self.reason = W.Textarea(placeholder="Why this outcome (required)", layout=W.Layout(width="90%"))
        self.reason.add_class("pm-adj-reason")
        self.base = W.Dropdown(description="Start from")
        self.base.add_class("pm-adj-base")
        self.resolve_button = W.Button(description="Resolve", button_style="success")
        self.resolve_button.add_class("pm-adj-resolve")
        self.status = W.HTML()
        self.status.add_class("pm-adj-status")
        self.choose.observe(lambda ch: self._show(), names="value")
        self.base.observe(lambda ch: self._default_picks(), names="value")
        self.resolve_button.on_click(lambda _: self._resolve())
        self.widget = W.VBox([W.HTML(f"<b>Adjudication · round {self.round}</b> — the two blind reviews, "
                                     "field by field; pick per row (a merge) or start from one review"),
                              self.choose, self.base, self.table, self.reason, self.resolve_button, self.status])
        self.widget.add_class("pm-adjudication")
        self.pick: dict[str, W.Dropdown] = {}
        self.refresh()
        self.guard.watch(self.widget)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.value = f"<span style='color:{'#b00' if error else '#060'}'>{esc(text)}</span>"

    def refresh(self) -> None:
        ids = [rid for rid in disagreements(self.store, self.team, self.round)  # not one's own (as a person)
               if not any(same_person(self.adjudicator, r.reviewer) for r in self.team.reviews(self.round, rid))]
        self.choose.options = ids
        self.choose.value = ids[0] if ids else None
        if not ids:
            self.table.children = [W.HTML("<i>no disagreement waiting for you</i>")]
        self.resolve_button.disabled = not ids

    def _show(self) -> None:
        rid = self.choose.value
        if rid is None:
            return
        sbs = side_by_side(self.store, self.team, rid, self.round)
        names = sbs["reviewers"]
        self.base.options = names
        self.base.value = names[0]
        cols = "".join(f"<col style='width:{w}%'>" for w in [9, 9] + [82 // (len(names) + 1)] * (len(names) + 1))

        def line_of(cells, style="", tag="td"):
            inner = "".join(f"<{tag} style='vertical-align:top;overflow-wrap:anywhere'>{c}</{tag}>" for c in cells)
            return W.HTML(f"<table class='pm-table' style='table-layout:fixed;width:100%'><colgroup>{cols}</colgroup>"
                          f"<tr{style}>{inner}</tr></table>", layout=W.Layout(width="85%"))

        head = W.HBox([line_of([esc(h) for h in ["criterion", "field", "draft"] + names], tag="th"),
                       W.HTML("<b>take</b>")])
        rows, self.pick = [head], {}
        for row in sbs["rows"]:
            cid, field = row["criterion"], row["field"]
            key = ("decision" if field == "decision" else field if cid is None
                   else cid if field == "criterion" else f"{cid}.{field}")
            cells = [cid or "(rubric)", field, row["draft"]] + [row["values"][n] for n in names]
            style = "" if row["agree"] else " style='background:#fff4d6'"
            line = line_of([esc(v) if v != ABSENT else "<i>(removed)</i>" for v in cells], style)
            if row["agree"]:
                rows.append(W.HBox([line, W.HTML("<small>agree</small>")]))
                continue
            dd = W.Dropdown(options=names, value=names[0], layout=W.Layout(width="120px"))
            dd.add_class("pm-adj-pick")
            dd.add_class("pm-adj-pick-" + key.replace(".", "-"))
            self.pick[key] = dd
            rows.append(W.HBox([line, dd]))
        self.table.children = rows
        self.status.value = ""
        if hasattr(self, "guard"):
            self.guard.watch(self.widget)  # the new pick dropdowns

    def _default_picks(self) -> None:
        for dd in self.pick.values():
            if self.base.value in dd.options:
                dd.value = self.base.value

    def _resolve(self) -> None:
        rid = self.choose.value
        picks = {k: dd.value for k, dd in self.pick.items() if dd.value != self.base.value}
        try:
            rev = resolve(self.store, self.team, rid, self.adjudicator, self.reason.value,
                          choice=self.base.value, picks=picks, round=self.round)
        except (TeamError, RubricError, StaleRevisionError, ValueError) as exc:
            self.status.value = f"<span style='color:#b00'>not resolved: {esc(str(exc))}</span>"
            return
        self.reason.value = ""
        self.refresh()
        self.status.value = (f"<span style='color:#060'>resolved {esc(rid)}: revision {rev.revision} "
                             f"({esc(rev.status)}) by {esc(rev.author)}</span>")


class RoundsView:
    """Per-round metrics and the chart across rounds."""

    def __init__(self, store: RubricStore, team: TeamStore, *, guard: PageGuard | None = None):
        self.store, self.team = store, team
        self.table = W.HTML()
        self.table.add_class("pm-rounds-table")
        self.chart = W.Output()
        self.chart.add_class("pm-rounds-chart")
        self.refresh_button = W.Button(description="Refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.widget = W.VBox([self.refresh_button, self.table, self.chart])
        self.widget.add_class("pm-rounds")
        self.refresh()
        if guard is not None:
            guard.watch(self.widget)

    def refresh(self) -> None:
        rows = rounds_table(self.store, self.team)

        def pct(v):
            return "–" if v is None else f"{v:.1%}"

        def num(v):
            return "–" if v is None else f"{v:.3f}"

        self.table.value = table(
            ["round", "rubrics", "resolved", "pass rate", "approved", "edit rate per tier", "most-changed dimensions",
             "criterion κ", "criterion α", "decision κ", "pool"],
            [[m["round"], m["rubrics"], m["resolved"], pct(m["pass_rate"]), pct(m["approval_rate"]),
              ", ".join(f"{t} {v:.0%}" for t, v in m["edit_rate_per_tier"].items()),
              ", ".join(f"{d} ({n})" for d, n in m["most_changed_dimensions"]),
              num(m["criterion_kappa"]), num(m["criterion_alpha"]), num(m["decision_kappa"]), m["pool_size"]]
             for m in rows])
        self.chart.clear_output()
        with self.chart:
            rounds_figure(rows).show()


def review_app(store: RubricStore, reviewer: str, round: int | None = None):
    """Tabs: my queue · adjudicate · rounds (plus the keyboard shortcuts), for the launch identity.

    Returns the root VBox (a one-line status, then the tabs) with ``.reviewer``, ``.adjudication``,
    ``.rounds``, ``.tab``, ``.guard`` and ``.identity``. Every widget under it is guarded (:class:`PageGuard`).
    """
    team = TeamStore(store)
    identity = team.canonical(reviewer)  # TeamError (one line) for another spelling of a team member's name
    status = W.HTML()
    status.add_class("pm-app-status")

    def say(text: str, error: bool = False) -> None:
        status.value = f"<span style='color:{'#b00' if error else '#060'}'>{esc(text)}</span>"

    guard = PageGuard(say, identity)
    tabs, titles = [], []
    try:
        app = TeamReviewer(store, team, identity, round, guard=guard)
        tabs.append(app.widget)
    except TeamError as exc:
        app = None
        tabs.append(W.HTML(f"<i>{esc(one_line(exc))}</i>"))
    titles.append("My queue")
    adj = AdjudicationView(store, team, identity, round, guard=guard)
    rounds = RoundsView(store, team, guard=guard)
    tabs += [adj.widget, rounds.widget]
    titles += ["Adjudicate", "Rounds"]
    tab = W.Tab(children=tabs)
    for i, t in enumerate(titles):
        tab.set_title(i, t)
    tab.add_class("pm-team-app")

    def on_tab(ch):
        if ch["new"] == 1:
            adj.refresh()
        elif ch["new"] == 2:
            rounds.refresh()

    tab.observe(on_tab, names="selected_index")
    root = W.VBox([status, tab])
    root.add_class("pm-team-root")
    guard.watch(root)
    root.reviewer, root.adjudication, root.rounds, root.tab = app, adj, rounds, tab
    root.guard, root.identity, root.status = guard, identity, status
    return root


def error_widget(text: str):
    w = W.HTML(f"<div style='color:#b00'>{esc(text)}</div>")
    w.add_class("pm-app-error")
    return w


def app_from_launch(environ=None):
    """The app for the identity ``promedical review`` launched this kernel with (its environment:
    ``PROMEDICAL_WORKSPACE``, ``PROMEDICAL_REVIEWER``, ``PROMEDICAL_ROUND``); any failure is one line."""
    env = os.environ if environ is None else environ
    try:
        workspace = env.get("PROMEDICAL_WORKSPACE")
        if not workspace:
            raise TeamError("no workspace: start the app with `promedical review --workspace W --reviewer NAME`")
        rnd = env.get("PROMEDICAL_ROUND")
        if rnd and not rnd.isdigit():
            raise TeamError(f"PROMEDICAL_ROUND must be a round number, got {rnd!r}")
        return review_app(open_store(workspace), env.get("PROMEDICAL_REVIEWER", ""), int(rnd) if rnd else None)
    except Exception as exc:  # noqa: BLE001 - the page shows one line, never a traceback
        return error_widget(f"the review app cannot open: {one_line(exc)}")

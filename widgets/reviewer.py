"""Clinician rubric reviewer: an ipywidgets app over :class:`promedical.review.session.ReviewSession`.

Every widget shows escaped text only (``html.escape``), never raw HTML from data. All logic lives
in the session; the widget only forwards edits and renders the session. CSS classes ``pm-...``
let a browser test find each control.

Store reads: an edit (a keystroke) reads nothing from the store — the diff is against the session's
base revision, held in memory. Opening a rubric reads its latest revision and history; the progress
count reads the statuses of the queue (indexed rows, no rubric is parsed). When another reviewer
saved the rubric first, *Save* is refused with the reason, the edits stay (and stay autosaved), and
*Keep my edits on the latest revision* rebases them so the next save goes through.
"""
from __future__ import annotations

import html
import json
import re

import ipywidgets as W

from promedical.core.rubric import TIERS, RubricError
from promedical.review.session import ReviewSession, loose_rubric
from promedical.rubrics.store import RubricStore, StaleRevisionError

DONE = ("approved", "rejected")


def esc(value) -> str:
    """Escaped display text; dicts and lists as compact JSON."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return html.escape(value).replace("\n", "<br>")


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table class='pm-table'><tr>{head}</tr>{body}</table>"


def _button(label: str, css: str, style: str = "") -> W.Button:
    b = W.Button(description=label, button_style=style)
    b.add_class(css)
    return b


class CriterionRow:
    """The controls of one criterion; edits go straight to the session."""

    def __init__(self, app: "RubricReviewer", c: dict):
        self.app, self.cid = app, c["id"]
        s = app.session
        prof = c.get("tier") == "proficiency"
        weight = c.get("weight")
        self.label = W.HTML(f"<b>{esc(self.cid)}</b>")
        self.text = W.Textarea(value=c.get("text") or "", layout=W.Layout(width="40%"))
        self.tier = W.Dropdown(options=list(TIERS) if c.get("tier") in TIERS else list(TIERS) + [c.get("tier")],
                               value=c.get("tier"), layout=W.Layout(width="120px"))
        self.dimension = W.Text(value=c.get("dimension") or "", placeholder="dimension")
        self.weight = W.FloatText(value=float(weight) if isinstance(weight, (int, float)) else 0.0,
                                  step=0.05, disabled=not prof, layout=W.Layout(width="80px"))
        self.weight.layout.visibility = "visible" if prof else "hidden"
        self.normalised = W.HTML()
        self.decision = W.ToggleButtons(options=[("accept", "accept"), ("reject", "reject")],
                                        value=s.decisions.get(self.cid))
        self.adheres = W.Text(value=c.get("adheres") or "", placeholder="adheres (what meeting it looks like)")
        self.violates = W.Text(value=c.get("violates") or "", placeholder="violates")
        self.problems = W.HTML()
        for w, css in [(self.text, "text"), (self.tier, "tier"), (self.dimension, "dimension"),
                       (self.weight, "weight"), (self.normalised, "normalised"), (self.decision, "decision"),
                       (self.adheres, "adheres"), (self.violates, "violates"), (self.problems, "problems")]:
            w.add_class(f"pm-criterion-{css}")
        for field in ("text", "dimension", "weight", "adheres", "violates"):
            getattr(self, field).observe(lambda ch, f=field: self.app._edit(self.cid, f, ch["new"]), names="value")
        self.tier.observe(lambda ch: self.app._retier(self.cid, ch["new"]), names="value")
        self.decision.observe(lambda ch: self.app._decide(self.cid, ch["new"]), names="value")
        self.box = W.VBox([
            W.HBox([self.label, self.text, self.tier, self.weight, self.normalised, self.decision]),
            W.HBox([self.dimension, self.adheres, self.violates]), self.problems])
        self.box.add_class("pm-criterion")
        self.box.add_class("pm-cid-" + re.sub(r"[^\w-]", "_", self.cid))

    def refresh(self, weights: dict, problems: list[str]) -> None:
        w = weights.get(self.cid)
        self.normalised.value = f"→ {w:.3f}" if w is not None else ""
        mine = [p for p in problems if p.startswith(f"criteria[{self.cid}]")]
        self.problems.value = "".join(f"<div style='color:#b00'>{esc(p)}</div>" for p in mine)
        rejected = self.app.session.rejected(self.cid)
        (self.box.add_class if rejected else self.box.remove_class)("pm-rejected")
        self.text.layout.opacity = "0.5" if rejected else "1"


class RubricReviewer:
    """Queue of rubrics to review; ``.widget`` is the root VBox (display the object or the widget)."""

    def __init__(self, store: RubricStore, reviewer: str, rubric_ids: list[str] | None = None):
        self.store = store
        self.ids = list(rubric_ids) if rubric_ids is not None else store.ids()
        statuses = store.statuses(self.ids)
        missing = [i for i in self.ids if i not in statuses]
        if missing or not self.ids:
            raise ValueError(f"nothing to review: unknown rubric ids {missing}" if missing else "no rubrics to review")
        self._syncing = False
        self.rows: dict[str, CriterionRow] = {}

        def css(w, name):
            w.add_class(name)
            return w

        self.reviewer_name = css(W.Text(value=reviewer, description="Reviewer", continuous_update=False), "pm-reviewer")
        self.progress = css(W.HTML(), "pm-progress")
        self.position = css(W.HTML(), "pm-position")
        self.prev_button = _button("◀ Previous", "pm-prev")
        self.next_button = _button("Next ▶", "pm-next")
        self.instruction = css(W.HTML(), "pm-instruction")
        self.weights = css(W.HTML(), "pm-weights")
        self.criteria_box = css(W.VBox(), "pm-criteria")
        self.add_tier = css(W.Dropdown(options=list(TIERS), value="proficiency"), "pm-add-tier")
        self.add_text = css(W.Textarea(placeholder="new criterion text"), "pm-add-text")
        self.add_dimension = css(W.Text(placeholder="dimension"), "pm-add-dimension")
        self.add_weight = css(W.FloatText(value=0.0, description="weight"), "pm-add-weight")
        self.add_button = _button("Add criterion", "pm-add")
        self.renormalise_button = _button("Renormalise S1 weights", "pm-renormalise")
        self.comment = css(W.Textarea(placeholder="Critique: what is wrong or missing, and why",
                                      layout=W.Layout(width="90%")), "pm-comment")
        self.save_button = _button("Save", "pm-save")
        self.approve_button = _button("Approve rubric", "pm-approve", "success")
        self.reject_button = _button("Reject rubric", "pm-reject", "danger")
        self.discard_button = _button("Discard unsaved edits", "pm-discard", "warning")
        self.rebase_button = _button("Keep my edits on the latest revision", "pm-rebase", "info")
        self.rebase_button.layout.display = "none"  # shown while the session is stale
        self.status = css(W.HTML(), "pm-status")
        self.problems = css(W.HTML(), "pm-problems")
        self.diff = css(W.HTML(), "pm-diff")
        self.history = css(W.HTML(), "pm-history")

        self.prev_button.on_click(lambda _: self.go(self.index - 1))
        self.next_button.on_click(lambda _: self.go(self.index + 1))
        self.add_button.on_click(lambda _: self._add())
        self.renormalise_button.on_click(lambda _: self._mutate(self.session.renormalise, rebuild=True))
        self.save_button.on_click(lambda _: self._save("in_review"))
        self.approve_button.on_click(lambda _: self._save("approved"))
        self.reject_button.on_click(lambda _: self._save("rejected"))
        self.discard_button.on_click(lambda _: self._mutate(self.session.discard, rebuild=True))
        self.rebase_button.on_click(lambda _: self._rebase())
        self.comment.observe(lambda ch: self._mutate(lambda: setattr(self.session, "comment", ch["new"])), names="value")
        self.reviewer_name.observe(lambda ch: self._open(self.index), names="value")

        self.widget = W.VBox([
            W.HBox([self.reviewer_name, self.prev_button, self.next_button, self.progress]), self.position,
            self.instruction, W.HTML("<b>Criteria</b>"), self.weights, self.criteria_box,
            W.HBox([self.add_tier, self.add_text, self.add_dimension, self.add_weight, self.add_button]),
            self.renormalise_button, W.HTML("<b>Comment</b>"), self.comment,
            W.HBox([self.save_button, self.approve_button, self.reject_button, self.discard_button,
                    self.rebase_button]),
            self.status, self.problems, W.HTML("<b>Changes against the stored revision</b>"), self.diff,
            W.HTML("<b>History</b>"), self.history])
        self.widget.add_class("pm-reviewer-app")
        self.index = self._first_index(statuses)
        self._open(self.index)

    def _first_index(self, statuses: dict) -> int:
        """Where the queue opens: the first rubric not approved or rejected yet."""
        return next((i for i, rid in enumerate(self.ids) if statuses[rid] not in DONE), 0)

    def _session(self, rubric_id: str, reviewer: str) -> ReviewSession:
        return ReviewSession(self.store, rubric_id, reviewer)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- navigation ------------------------------------------------------------------------------
    def go(self, index: int) -> None:
        if 0 <= index < len(self.ids):
            self._open(index)

    def _open(self, index: int) -> None:
        name = self.reviewer_name.value.strip()
        if not name:
            self._say("enter your name as reviewer first", error=True)
            return
        self.index = index
        self.session = self._session(self.ids[index], name)
        self._show_comment()
        self._render(rebuild=True)
        if self.session.restored:
            s = self.session
            extra = (f"; revision {s.latest.revision} was saved since by {s.latest.author}: saving will be refused "
                     "until you keep your edits on the latest revision or discard them" if s.stale else "")
            self._say(f"restored unsaved edits (started from revision {s.base_revision}){extra}", error=s.stale)

    # -- session calls ---------------------------------------------------------------------------
    def _mutate(self, fn, rebuild: bool = False) -> None:
        if self._syncing:
            return
        fn()
        if rebuild:
            self._show_comment()
        self._render(rebuild=rebuild)

    def _show_comment(self) -> None:
        """Put the session's comment in the box without echoing it back as an edit."""
        self._syncing = True
        try:
            self.comment.value = self.session.comment
        finally:
            self._syncing = False

    def _edit(self, cid: str, field: str, value) -> None:
        self._mutate(lambda: self.session.edit(cid, field, value))

    def _retier(self, cid: str, tier: str) -> None:
        self._mutate(lambda: self.session.set_tier(cid, tier), rebuild=True)

    def _decide(self, cid: str, decision) -> None:
        if decision == "reject":
            self._mutate(lambda: self.session.reject(cid))
        elif decision == "accept":
            self._mutate(lambda: self.session.accept(cid))

    def _add(self) -> None:
        text = self.add_text.value.strip()
        if not text:
            self._say("type the new criterion's text first", error=True)
            return
        weight = self.add_weight.value if self.add_tier.value == "proficiency" and self.add_weight.value > 0 else None
        cid = self.session.add(self.add_tier.value, text, self.add_dimension.value.strip() or None, weight)
        self.add_text.value, self.add_dimension.value, self.add_weight.value = "", "", 0.0
        self._render(rebuild=True)
        self._say(f"added {cid}")

    def _save(self, status: str) -> None:
        try:
            rev = self.session.save(status)
        except StaleRevisionError as exc:
            self._render(rebuild=True)  # history now shows the other revision; the edits are the session's
            self._say(f"not saved: {exc}", error=True)
            return
        except RubricError as exc:
            self._render()
            self._say(f"not saved: {len(exc.problems)} problem(s) to fix, listed below", error=True)
            return
        except ValueError as exc:
            self._say(f"not saved: {exc}", error=True)
            return
        if status in DONE and self.index + 1 < len(self.ids):
            self._open(self.index + 1)
        else:
            self._open(self.index)
        done = " — every rubric in the queue is reviewed" if self.reviewed() == len(self.ids) else ""
        prefix = "saved as " if status == "in_review" else ""
        self._say(f"{prefix}{rev.status} (revision {rev.revision}){done}")

    def _rebase(self) -> None:
        self.session.rebase()
        self._render(rebuild=True)
        self._say(f"your edits now apply on revision {self.session.base_revision}: the changes below are what "
                  "saving will change in it (check you are not undoing the other reviewer's work)")

    # -- rendering -------------------------------------------------------------------------------
    def _say(self, text: str, error: bool = False) -> None:
        color = "#b00" if error else "#060"
        self.status.value = f"<span style='color:{color}'>{esc(text)}</span>"

    def reviewed(self) -> int:
        statuses = self.store.statuses(self.ids)
        return sum(statuses.get(rid) in DONE for rid in self.ids)

    def _render(self, rebuild: bool = False) -> None:
        s = self.session
        if rebuild:
            self.rows = {c["id"]: CriterionRow(self, c) for c in s.criteria}
            self.criteria_box.children = [r.box for r in self.rows.values()]
        self.status.value = ""
        base = s.base  # in memory: a keystroke reads nothing from the store
        if rebuild:
            self.progress.value = f"{self.reviewed()} / {len(self.ids)} reviewed"
            self.history.value = table(["revision", "author", "time", "status", "reason"],
                                       [[h.revision, h.author, h.timestamp, h.status, h.reason] for h in s.history()])
            self.rebase_button.layout.display = None if s.stale else "none"
        r = s.rubric
        meta = " · ".join(esc(r[k]) for k in ("category", "specialty") if r.get(k))
        self.position.value = (f"rubric {self.index + 1} of {len(self.ids)}: <b>{esc(s.rubric_id)}</b> "
                               f"({meta}) — editing revision {base.revision}, status {esc(base.status)}"
                               + (f" · <b style='color:#b00'>revision {s.latest.revision} is newer</b>" if s.stale else ""))
        self.instruction.value = f"<div class='pm-instruction-text'>{esc(loose_rubric(r).instruction_text)}</div>"
        weights, problems = s.normalised_weights(), s.problems()
        for row in self.rows.values():
            row.refresh(weights, problems)
        self.weights.value = ("S1 weights as saved (renormalised): "
                              + " · ".join(f"{esc(k)} {v:.3f}" for k, v in weights.items())
                              if weights else "<span style='color:#b00'>S1 weights cannot be renormalised yet</span>")
        self.problems.value = ("<div style='color:#b00'><b>Fix before saving:</b><ul>"
                               + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul></div>"
                               if problems else "<span style='color:#060'>valid: ready to save</span>")
        changes = s.diff()
        self.diff.value = (table(["op", "criterion", "field", "old", "new"],
                                 [[c["op"], c["criterion"], c["field"], c["old"], c["new"]] for c in changes])
                           if changes else f"<i>no changes against revision {base.revision}</i>")

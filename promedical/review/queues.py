"""Review queues and blind double review.

- :func:`plan_assignments` spreads a round's rubrics over reviewers — ``round-robin`` or by
  ``specialty`` (each rubric to the least-loaded reviewer who covers its specialty) — and picks a
  share of them (``double_share``, seeded) for a second, independent reviewer;
  :func:`read_assignment_file` takes the plan from a JSONL file instead
  (``{"rubric_id": "...", "reviewers": ["ana", "ben"]}`` per line).
- :func:`assign` records the plan in the team file with the draft revision each reviewer starts from.
- :func:`queue` and :func:`progress`: what a reviewer has to do and how far they are.
- :class:`BlindReviewSession`: a :class:`~promedical.review.session.ReviewSession` that starts from the
  draft revision of the assignment and submits to the team file, not to the store. The store's
  latest revision stays the draft while any reviewer of the rubric has not submitted, and the
  session's history shows the draft only: neither reviewer sees the other's edits.
- :func:`finalize`: once every assigned reviewer submitted, one review (or two identical ones) is
  written to the store as the next revision; two that differ wait for adjudication
  (:mod:`promedical.review.adjudication`).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

from promedical.core.jsonl import iter_jsonl
from promedical.core.rubric import Problem, Rubric, RubricError
from promedical.review.names import clean_name, reviewer_key
from promedical.review.session import ReviewSession, autosave_name
from promedical.review.team import Assignment, Review, TeamError, TeamStore
from promedical.rubrics.store import Revision, RubricStore, StaleRevisionError

METHODS = ("round-robin", "specialty")


def plan_assignments(rubrics: list[Rubric], reviewers: list[str], *, by: str = "round-robin",
                     specialties: dict[str, list[str]] | None = None, double_share: float = 0.0,
                     seed: int = 0) -> dict[str, list[str]]:
    """Rubric id -> its reviewers (one, or two for the double-reviewed share)."""
    reviewers = distinct_reviewers(reviewers)
    if not reviewers:
        raise ValueError("name at least one reviewer")
    if by not in METHODS:
        raise ValueError(f"assignment method must be one of {METHODS}, got {by!r}")
    if not (isinstance(double_share, (int, float)) and 0.0 <= double_share <= 1.0):
        raise ValueError(f"double_share must be a number in [0, 1], got {double_share!r}")
    if double_share > 0 and len(reviewers) < 2:
        raise ValueError("double review needs at least two reviewers")
    if by == "specialty" and not specialties:
        raise ValueError("assignment by specialty needs each reviewer's specialties")
    covers = {reviewer_key(k): v for k, v in (specialties or {}).items()}  # keyed by person, however spelled
    ids = [r.id for r in rubrics]
    n_double = math.ceil(double_share * len(ids) - 1e-9)
    double = set(random.Random(seed).sample(ids, n_double))
    load = {r: 0 for r in reviewers}
    order = {r: i for i, r in enumerate(reviewers)}

    def pick(candidates: list[str], exclude: set[str]) -> str:
        pool = [c for c in candidates if c not in exclude] or [r for r in reviewers if r not in exclude]
        best = min(pool, key=lambda r: (load[r], order[r]))
        load[best] += 1
        return best

    plan: dict[str, list[str]] = {}
    for i, r in enumerate(rubrics):
        if by == "round-robin":
            cands = reviewers[i % len(reviewers):] + reviewers[:i % len(reviewers)]
            first = cands[0]
            load[first] += 1
            who = [first]
            if r.id in double:
                who.append(pick(cands[1:], {first}))
        else:
            cands = [x for x in reviewers if r.specialty and r.specialty in (covers.get(reviewer_key(x)) or [])]
            who = [pick(cands, set())]
            if r.id in double:
                who.append(pick(cands, set(who)))
        plan[r.id] = who
    return plan


def distinct_reviewers(names) -> list[str]:
    """Clean names, duplicates dropped; ValueError (one line) for one person spelled two ways."""
    out: dict[str, str] = {}
    for name in names:
        clean = clean_name(name)
        if not clean:
            continue
        other = out.setdefault(reviewer_key(clean), clean)
        if other != clean:
            raise ValueError(f"reviewers {other!r} and {name!r} are one person spelled two ways: use one spelling")
    return list(out.values())


def read_assignment_file(path: str | Path, known_ids: set[str]) -> dict[str, list[str]]:
    """A plan from JSONL ``{"rubric_id", "reviewers": [..]}``; RubricError listing every problem."""
    plan, problems = {}, []
    for line, obj, err in iter_jsonl(path):
        if err is None:
            if not isinstance(obj, dict) or set(obj) - {"rubric_id", "reviewers"}:
                err = "must be an object with rubric_id and reviewers only"
            elif obj.get("rubric_id") not in known_ids:
                err = f"rubric_id: {obj.get('rubric_id')!r} is not a rubric of this round"
            elif obj["rubric_id"] in plan:
                err = f"rubric_id: {obj['rubric_id']!r} is assigned on an earlier line"
            elif (not isinstance(obj.get("reviewers"), list) or not 1 <= len(obj["reviewers"]) <= 5
                  or not all(clean_name(x) for x in obj["reviewers"])
                  or len({reviewer_key(x) for x in obj["reviewers"]}) != len(obj["reviewers"])):
                err = ("reviewers: must be a list of 1 to 5 distinct non-empty names (names compare "
                       "ignoring case, width and invisible characters)")
        if err:
            problems.append(Problem(str(path), line, "<assignment>", err))
        else:
            plan[obj["rubric_id"]] = [clean_name(x) for x in obj["reviewers"]]
    if not plan and not problems:
        problems.append(Problem(str(path), 0, "<file>", "file is empty (no assignments)"))
    if problems:
        raise RubricError(problems)
    return plan


def assign(store: RubricStore, team: TeamStore, plan: dict[str, list[str]], round: int | None = None) -> list[Assignment]:
    """Record a plan for a round: each reviewer starts from the rubric's current (draft) revision."""
    rnd = team.round(round)
    in_round = set(rnd["rubric_ids"])
    current = store.current(list(plan))
    rows = []
    for rid, who in plan.items():
        if rid not in in_round:
            raise TeamError(f"rubric {rid!r} is not in round {rnd['round']}")
        if rid not in current:
            raise TeamError(f"rubric {rid!r} is not in the store")
        rows += [Assignment(rnd["round"], rid, r, current[rid].revision, len(who) > 1) for r in who]
    team.add_assignments(rows)
    return rows


def queue(team: TeamStore, reviewer: str, round: int | None = None) -> list[str]:
    """The rubric ids assigned to a reviewer in a round (the latest round by default), in order."""
    return [a.rubric_id for a in team.assignments(team.round(round)["round"], reviewer=reviewer)]


def progress(team: TeamStore, reviewer: str, round: int | None = None) -> dict:
    """assigned / submitted / to do, and of the submitted ones how many wait for another reviewer."""
    rnd = team.round(round)["round"]
    mine = queue(team, reviewer, rnd)
    done = {r.rubric_id for r in team.reviews(rnd, reviewer=reviewer)}
    waiting = 0
    for rid in done:
        if len(team.reviews(rnd, rubric_id=rid)) < len(team.assignments(rnd, rubric_id=rid)):
            waiting += 1
    return {"round": rnd, "reviewer": reviewer, "assigned": len(mine), "submitted": len(done),
            "todo": [rid for rid in mine if rid not in done], "waiting_for_other_reviewer": waiting}


def reviews_agree(reviews: list[Review]) -> bool:
    """Same decision and the same reviewed rubric (field for field)."""
    first = reviews[0]
    return all(r.decision == first.decision and r.rubric.to_dict() == first.rubric.to_dict() for r in reviews[1:])


def finalize(store: RubricStore, team: TeamStore, round: int, rubric_id: str) -> Revision | None:
    """Write the outcome to the store once every reviewer submitted and they agree; else None.

    One reviewer: their review becomes the next revision (action ``review``). Several who agree:
    one revision (action ``consensus``) whose reason names every review. Several who differ:
    nothing yet — an adjudicator resolves it. Safe to call twice (the second finds it written).
    """
    assigned = team.assignments(round, rubric_id=rubric_id)
    reviews = team.reviews(round, rubric_id=rubric_id)
    if not assigned or len(reviews) < len(assigned) or team.adjudications(round, rubric_id):
        return None
    base = assigned[0].base_revision
    if not reviews_agree(reviews):
        return None
    first = reviews[0]
    if len(reviews) == 1:
        kw = dict(author=first.reviewer, action="review", reason=first.comment)
    else:
        names = ", ".join(f"{r.reviewer} (review #{r.seq})" for r in reviews)
        notes = " | ".join(f"{r.reviewer}: {r.comment}" for r in reviews if r.comment)
        kw = dict(author=first.reviewer, action="consensus",
                  reason=f"blind double review, round {round}: {names} agree" + (f"; {notes}" if notes else ""))
    try:
        return store.save(first.rubric, status=first.decision, base_revision=base, **kw)
    except StaleRevisionError:
        return None  # written by the other reviewer's finalize, or changed outside the round


class BlindReviewSession(ReviewSession):
    """One reviewer's independent review of an assigned rubric, from the draft revision."""

    def __init__(self, store: RubricStore, team: TeamStore, rubric_id: str, reviewer: str, *,
                 round: int | None = None, autosave: bool = True, resume: bool = True):
        reviewer = team.canonical(reviewer)  # the team's spelling; a different spelling of a name is refused
        self.team, self.round = team, team.round(round)["round"]
        mine = team.assignments(self.round, rubric_id=rubric_id, reviewer=reviewer)
        if not mine:
            raise TeamError(f"{reviewer!r} is not assigned rubric {rubric_id!r} in round {self.round}")
        self.assignment = mine[0]
        self.finalized: Revision | None = None
        self.submitted = next(iter(team.reviews(self.round, rubric_id=rubric_id, reviewer=reviewer)), None)
        draft = store.get(rubric_id, self.assignment.base_revision)
        super().__init__(store, rubric_id, reviewer, autosave=autosave and self.submitted is None,
                         resume=resume and self.submitted is None, revision=draft)
        if self.submitted is not None:  # show what was submitted (read-only: save refuses)
            self.rubric = self.submitted.rubric.to_dict()

    @property
    def autosave_path(self) -> Path:
        return self.store.autosave_dir / "team" / f"round-{self.round}" / autosave_name(self.rubric_id, self.reviewer)

    @property
    def _legacy_autosave_path(self) -> Path:
        return self.autosave_path

    def history(self) -> list[Revision]:
        """The draft only: the other reviewer's work is not shown until the rubric is resolved."""
        return [self.base]

    def discard(self) -> None:
        self.autosave_path.unlink(missing_ok=True)
        self._start(self.store.get(self.rubric_id, self.assignment.base_revision))
        self.restored = False

    def rebase(self) -> None:
        raise TeamError("a blind review stays on the draft revision; there is nothing to rebase on")

    def save(self, status: str = "in_review"):
        """``in_review``: keep the working copy (autosaved). ``approved``/``rejected``: submit the review.

        Submitting appends the review to the team file (RubricError if the rubric is invalid,
        TeamError if already submitted) and finalizes the rubric when every reviewer is done.
        Returns the :class:`~promedical.review.team.Review` (None for ``in_review``).
        """
        if self.submitted is not None:
            raise TeamError(f"{self.reviewer!r} already submitted rubric {self.rubric_id!r} in round {self.round}")
        if status == "in_review":
            self._autosave()
            return None
        if status not in ("approved", "rejected"):
            raise ValueError(f"status must be in_review, approved or rejected, got {status!r}")
        problems = self.problems()
        if problems:
            raise RubricError([Problem(f"<review {self.rubric_id}>", 0, *p.split(": ", 1)) for p in problems])
        review = self.team.add_review(self.round, self.rubric_id, self.reviewer, self.base_revision, status,
                                      self._comment, self.diff(), Rubric.from_dict(self.result()))
        self.autosave_path.unlink(missing_ok=True)
        self.submitted = review
        self.finalized = finalize(self.store, self.team, self.round, self.rubric_id)
        return review


def submit_review_records(store: RubricStore, team: TeamStore, path: str | Path, reviewer: str | None = None,
                          round: int | None = None) -> dict:
    """Batch blind reviews: a JSONL of review records (the format of ``review.apply_reviews``).

    Every record is applied to a blind session from the draft and checked first (RubricError
    listing every problem, nothing submitted); ``reviewer`` (a per-reviewer file) must match each
    record's reviewer when given. Decisions must be ``approve`` or ``reject``.
    """
    from promedical.review.batch import _apply_record, _record_problems

    rnd = team.round(round)["round"]
    lines = list(iter_jsonl(path))
    problems, sessions = [], []
    for line, rec, err in lines:
        if err is None:
            ids = [rec.get("rubric_id")] if isinstance(rec, dict) and isinstance(rec.get("rubric_id"), str) else []
            known = {rid: rev.rubric.to_dict() for rid, rev in store.current(ids).items()}
            found = _record_problems(rec, known)
            if not found and rec["decision"] not in ("approve", "reject"):
                found = [("decision", "a blind review must approve or reject")]
            if not found and reviewer is not None and reviewer_key(rec["reviewer"]) != reviewer_key(reviewer):
                found = [("reviewer", f"{rec['reviewer']!r} in a file of reviewer {reviewer!r}")]
            if not found:
                try:
                    s = BlindReviewSession(store, team, rec["rubric_id"], rec["reviewer"], round=rnd,
                                           autosave=False, resume=False)
                    if s.submitted is not None:
                        raise TeamError(f"{s.reviewer!r} already submitted this rubric")
                    _apply_record(s, rec)
                    found = [tuple(p.split(": ", 1)) for p in s.problems()]
                except (TeamError, KeyError) as exc:
                    found = [("<record>", str(exc).strip("'\""))]
            problems += [Problem(str(path), line, f, m) for f, m in found]
            if not found:
                sessions.append((s, rec))
        else:
            problems.append(Problem(str(path), line, "<line>", err))
    if not lines and not problems:
        problems.append(Problem(str(path), 0, "<file>", "file is empty (no review records)"))
    if problems:
        raise RubricError(problems)
    out = {"submitted": 0, "finalized": []}
    for s, rec in sessions:
        s.save("approved" if rec["decision"] == "approve" else "rejected")
        out["submitted"] += 1
        if s.finalized is not None:
            out["finalized"].append(s.rubric_id)
    return out


def read_specialties(text: str) -> dict[str, list[str]]:
    """``{"ana": ["cardiology"], ...}`` from JSON text (the CLI and notebooks pass it so)."""
    obj = json.loads(text)
    if not isinstance(obj, dict) or not all(isinstance(v, list) for v in obj.values()):
        raise ValueError("specialties must be a JSON object {reviewer: [specialty, ...]}")
    return obj

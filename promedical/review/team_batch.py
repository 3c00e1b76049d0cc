"""Team review in batch mode (notebook 02b, papermill): the same calls as the app, from files.

:func:`run_team_review` does, in order, what is given:

1. ``drafts_file`` (kit rubric JSONL): open a new round over these drafts with the current few-shot
   pool (``rounds.round_pool``);
2. assignment of the round, when it has none yet: ``assignments_file`` (JSONL, see
   ``queues.read_assignment_file``) or ``reviewers`` with ``assign_by`` / ``specialties`` / ``double_share``;
3. ``reviews_dir``: one ``<reviewer>.jsonl`` of review records per reviewer, submitted as blind reviews
   (``queues.submit_review_records``; a file's records must all be that reviewer's);
4. ``adjudications_file``: JSONL ``{"rubric_id", "adjudicator", "reason", "choice", "picks"}``
   (``adjudication.resolve``);

then returns the round's agreement and metrics and writes ``rubrics/rounds.html`` (the chart across
rounds). ``rubrics/team.json`` (every round, assignment, review and adjudication) and
``rubrics/team_review_summary.json`` hold blind reviews, so they are written only once the round is
closed (every rubric assigned, reviewed by all its reviewers and resolved: ``adjudication.unresolved``
is empty); a mid-round run writes neither and says how many rubrics keep the round open. Every file
here is created 0600 (the team's own files; reviewers read what they may in the app).
"""
from __future__ import annotations

from pathlib import Path

from promedical.core.files import atomic_write_text, write_json
from promedical.core.jsonl import iter_jsonl
from promedical.core.rubric import Problem, RubricError
from promedical.core.rubric_files import read_rubrics
from promedical.core.workspace import Workspace
from promedical.review.adjudication import disagreements, resolve, unresolved
from promedical.review.queues import assign, plan_assignments, read_assignment_file, submit_review_records
from promedical.review.rounds import open_round, round_metrics, round_pool, rounds_figure, rounds_table
from promedical.review.team import PRIVATE, TeamError, TeamStore
from promedical.rubrics.store import open_store

ADJ_KEYS = ("rubric_id", "adjudicator", "reason", "choice", "picks")


def apply_adjudications(store, team: TeamStore, path: str | Path, round: int | None = None) -> list[dict]:
    """Resolve disagreements from a JSONL file; RubricError naming FILE:LINE for any bad record."""
    problems, done = [], []
    for line, rec, err in iter_jsonl(path):
        if err is None and (not isinstance(rec, dict) or set(rec) - set(ADJ_KEYS)):
            err = f"must be an object with keys among {', '.join(ADJ_KEYS)}"
        if err is None and rec.get("picks") is not None and not isinstance(rec["picks"], dict):
            err = "picks: must be an object {field: reviewer}"
        if err is None:
            try:
                rev = resolve(store, team, rec.get("rubric_id"), rec.get("adjudicator"), rec.get("reason"),
                              choice=rec.get("choice"), picks=rec.get("picks"), round=round)
                done.append({"rubric_id": rev.rubric_id, "revision": rev.revision, "status": rev.status})
            except (TeamError, RubricError, ValueError) as exc:
                err = str(exc).splitlines()[0]
        if err:
            problems.append(Problem(str(path), line, "<adjudication>", err))
    if problems:
        raise RubricError(problems)
    return done


def run_team_review(workspace, *, drafts_file=None, reviewers=(), assign_by="round-robin", specialties=None,
                    double_share=0.0, assignments_file=None, reviews_dir=None, adjudications_file=None,
                    seed=0) -> dict:
    ws = Workspace.of(workspace)
    store = open_store(ws)
    team = TeamStore(store)
    out: dict = {}
    if drafts_file:
        out["opened_round"] = open_round(store, team, read_rubrics(drafts_file), round_pool(store),
                                         note=f"drafts from {Path(drafts_file).name}")
    rnd = team.round()
    if not team.assignments(rnd["round"]):
        if assignments_file:
            plan = read_assignment_file(assignments_file, set(rnd["rubric_ids"]))
        elif reviewers:
            rubrics = [rev.rubric for rev in store.current(rnd["rubric_ids"]).values()]
            plan = plan_assignments(rubrics, list(reviewers), by=assign_by, specialties=specialties,
                                    double_share=double_share, seed=seed)
        else:
            raise TeamError(f"round {rnd['round']} has no assignment: give reviewers or an assignments_file")
        out["assigned"] = len(assign(store, team, plan, rnd["round"]))
    if reviews_dir:
        files = sorted(Path(reviews_dir).glob("*.jsonl"))
        if not files:
            raise TeamError(f"{reviews_dir}: no <reviewer>.jsonl review file")
        out["reviews"] = {f.stem: submit_review_records(store, team, f, reviewer=f.stem, round=rnd["round"])
                          for f in files}
    if adjudications_file:
        out["adjudicated"] = apply_adjudications(store, team, adjudications_file, rnd["round"])
    out["waiting_for_adjudication"] = disagreements(store, team, rnd["round"])
    out["metrics"] = round_metrics(store, team, rnd["round"])
    out["pool_next_round"] = [r.id for r in round_pool(store).rubrics]
    table = rounds_table(store, team)
    out["rounds"] = table
    out["chart"] = str(atomic_write_text(ws.team_rounds_chart, rounds_figure(table).to_html(
        include_plotlyjs=True, full_html=True), mode=PRIVATE))
    still_open = unresolved(store, team, rnd["round"])
    out["open_rubrics"] = still_open
    if still_open:  # blind reviews stay in the 0600 team database until the round closes
        out["team_file"] = out["summary"] = None
        out["note"] = (f"round {rnd['round']} is open ({len(still_open)} rubric(s) unassigned, under review or "
                       f"waiting for adjudication): {ws.team_file.name} and {ws.team_review_summary.name} "
                       "are written when it closes")
        return out
    out["team_file"] = str(team.export(ws.team_file))
    out["summary"] = str(ws.team_review_summary)
    write_json(ws.team_review_summary, {k: v for k, v in out.items() if k not in ("pool_next_round",)}, mode=PRIVATE)
    return out

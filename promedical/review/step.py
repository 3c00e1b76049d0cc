"""Stage 02 in batch mode as phases: apply a reviews file, apply a policy, export the approved rubrics,
write the review summary with its analytics.

The reviewer widget (notebook 02) and these phases work on the same revision store: whatever a
clinician saved in the widget is there when the policy runs, and in the export and analytics::

    reviews = apply_reviews_file(ws, config)     # the reviews file's records, as revisions
    policy = apply_review_policy(ws, config)     # the remaining drafts, approved or rejected unattended
    export = export_reviewed(ws)                 # -> rubrics/reviewed.jsonl, validated
    summary = write_review_summary(ws, reviews, policy, export)   # + review analytics -> review_summary.json

Applying a reviews file is recorded (``core.phases``): the file applied last, unchanged and its
revisions still in the store, says so and is not applied twice (a re-run notebook would otherwise
review again, or fail on a criterion the first run removed). The other phases read the store as it is.
"""
from __future__ import annotations

import json
from pathlib import Path

from promedical.core.config import build
from promedical.core.files import write_json
from promedical.core.phases import Phase
from promedical.core.rubric_files import file_problems
from promedical.core.workspace import Workspace
from promedical.review.analytics import review_analytics
from promedical.review.batch import apply_policy, apply_reviews
from promedical.review.config import ReviewStepConfig
from promedical.rubrics.store import RubricStore, open_store


def apply_reviews_file(workspace, config: ReviewStepConfig) -> dict | None:
    """Apply ``reviews_file`` (JSONL of review records, all or nothing; None when there is none).
    Returns applied / approved / rejected / in_review counts and the revisions saved
    (also ``applied_reviews.json``)."""
    if not config.reviews_file:
        return None
    ws = Workspace.of(workspace)
    store = open_store(ws)
    phase = Phase(ws, "review.apply_reviews", inputs=Path(config.reviews_file))
    if _holds(store, ws.applied_reviews) and phase.reusable():
        return json.loads(ws.applied_reviews.read_text(encoding="utf-8"))
    applied = apply_reviews(store, config.reviews_file)
    write_json(ws.applied_reviews, applied)
    phase.done(ws.applied_reviews)
    return applied


def _holds(store: RubricStore, applied_file: Path) -> bool:
    """Whether the store holds every revision an earlier application of a reviews file saved."""
    try:
        saved = json.loads(applied_file.read_text(encoding="utf-8"))["revisions"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for r in saved:
        rev = store.get(r["rubric_id"], r["revision"])
        if rev is None or rev.author != r["reviewer"]:
            return False
    return bool(saved)


def apply_review_policy(workspace, config: ReviewStepConfig) -> dict | None:
    """Review every remaining draft unattended with ``policy`` as ``reviewer`` (None when no policy):
    ``approve-valid`` approves the valid drafts and rejects the rest, each with its problems."""
    if not config.policy:
        return None
    return apply_policy(open_store(workspace), config.policy, config.reviewer)


def export_reviewed(workspace) -> dict:
    """Write the approved rubrics to ``reviewed.jsonl`` and validate that file; returns how many were
    approved and the file's problems."""
    ws = Workspace.of(workspace)
    store = open_store(ws)
    reviewed = store.export(ws.reviewed_rubrics, status="approved")
    approved = len(store.rubrics(status="approved"))
    return {"approved": approved, "reviewed_file_problems": [str(p) for p in file_problems(reviewed)] if approved else [],
            "reviewed": str(reviewed)}


def write_review_summary(workspace, reviews: dict | None, policy: dict | None, export: dict) -> dict:
    """What the batch phases did, the export, and the review analytics of the store (decisions, edits
    per tier, reviewer agreement), written to ``review_summary.json``."""
    ws = Workspace.of(workspace)
    summary = {**({"reviews": reviews} if reviews is not None else {}),
               **({"policy": policy} if policy is not None else {}),
               "approved": export["approved"], "reviewed_file_problems": export["reviewed_file_problems"],
               "analytics": review_analytics(open_store(ws))}
    write_json(ws.review_summary, summary)
    return summary


def step_review(workspace=None, config: ReviewStepConfig | None = None, **params) -> dict:
    """02 in batch mode: apply a reviews file and/or a policy, then export and validate reviewed rubrics
    (``config`` and/or ``params``: ReviewStepConfig). Returns the review summary."""
    c = build(ReviewStepConfig, config, params)
    ws = Workspace.of(workspace)
    reviews = apply_reviews_file(ws, c)
    policy = apply_review_policy(ws, c)
    return write_review_summary(ws, reviews, policy, export_reviewed(ws))

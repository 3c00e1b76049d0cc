"""Stage 02 in batch mode as phases: apply a reviews file, apply a policy, export the approved rubrics."""
from __future__ import annotations

from promedical.core.config import build
from promedical.core.files import write_json
from promedical.core.rubric_files import file_problems
from promedical.core.workspace import Workspace
from promedical.review.config import ReviewStepConfig
from promedical.rubrics.store import open_store


def step_review(workspace=None, config: ReviewStepConfig | None = None, **params) -> dict:
    """02 in batch mode: apply a reviews file and/or a policy, then export and validate reviewed rubrics
    (``config`` and/or ``params``: ReviewStepConfig)."""
    from promedical.review.analytics import review_analytics
    from promedical.review.batch import apply_policy, apply_reviews

    c = build(ReviewStepConfig, config, params)
    ws = Workspace.of(workspace)
    store = open_store(ws)
    result: dict = {}
    if c.reviews_file:
        result["reviews"] = apply_reviews(store, c.reviews_file)
    if c.policy:
        result["policy"] = apply_policy(store, c.policy, c.reviewer)
    reviewed = store.export(ws / "rubrics" / "reviewed.jsonl", status="approved")
    result["approved"] = len(store.rubrics(status="approved"))
    result["reviewed_file_problems"] = [str(p) for p in file_problems(reviewed)] if result["approved"] else []
    result["analytics"] = review_analytics(store)
    write_json(ws / "rubrics" / "review_summary.json", result)
    return result

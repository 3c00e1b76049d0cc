"""Review analytics over the revision store: decisions, edits per tier, reviewer agreement (Cohen's kappa)."""
from __future__ import annotations

from collections import Counter

from promedical.core.metrics import cohens_kappa
from promedical.core.rubric import Rubric
from promedical.rubrics.store import RubricStore


def review_analytics(store: RubricStore) -> dict:
    """Acceptance rate, edits per tier, most-changed dimensions, added/removed, reviewer agreement.

    Agreement uses each reviewer's latest approve/reject revision of a rubric (the first two
    reviewers of a rubric are rater 1 and rater 2); keep/drop compares the criteria of the draft
    (latest non-review revision before it) with what the reviewer saved.
    """
    revisions = store.iter_revisions()
    statuses = Counter(store.status_counts())
    decided = statuses["approved"] + statuses["rejected"]
    edits, dims, fields = Counter(), Counter(), Counter()
    added = removed = 0
    decisions: dict[str, dict[str, str]] = {}
    keeps: dict[str, dict[str, dict[str, bool]]] = {}
    draft: dict[str, Rubric] = {}
    for r in revisions:
        if r.action != "review":
            draft[r.rubric_id] = r.rubric
            continue
        for ch in r.changes:
            crit = ch["new"] if ch["op"] == "add" else ch["old"] if ch["op"] == "remove" else None
            if ch["op"] == "change" and ch["criterion"]:
                crit = next((c.to_dict() for c in r.rubric.criteria if c.id == ch["criterion"]), {})
                edits[crit.get("tier")] += 1
                fields[ch["field"]] += 1
            added += ch["op"] == "add"
            removed += ch["op"] == "remove"
            if crit:
                dims[crit.get("dimension") or "(none)"] += 1
        if r.status in ("approved", "rejected"):
            decisions.setdefault(r.rubric_id, {})[r.author] = "approve" if r.status == "approved" else "reject"
            if r.rubric_id in draft:
                saved = {c.id for c in r.rubric.criteria}
                keeps.setdefault(r.rubric_id, {})[r.author] = {c.id: c.id in saved for c in draft[r.rubric_id].criteria}
    a, b = [], []
    for by in decisions.values():
        if len(by) >= 2:
            first, second = list(by)[:2]
            a.append(by[first])
            b.append(by[second])
    ka, kb = [], []
    for by in keeps.values():
        if len(by) >= 2:
            first, second = list(by)[:2]
            for cid in by[first].keys() & by[second].keys():
                ka.append(by[first][cid])
                kb.append(by[second][cid])
    return {
        "rubrics": sum(statuses.values()), "reviewed": decided, "approved": statuses["approved"],
        "rejected": statuses["rejected"], "in_review": statuses["in_review"], "draft": statuses["draft"],
        "acceptance_rate": statuses["approved"] / decided if decided else None,
        "edits_per_tier": edits, "fields_changed": fields, "most_changed_dimensions": dims,
        "criteria_added": added, "criteria_removed": removed,
        "decision_pairs": len(a), "decision_kappa": cohens_kappa(a, b),
        "criterion_pairs": len(ka), "criterion_kappa": cohens_kappa(ka, kb),
    }

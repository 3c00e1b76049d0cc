"""Inter-rater agreement of blind reviews: Cohen's kappa (two raters) and Krippendorff's alpha (any number).

Units and labels:

- **criterion decision**: each criterion of the draft, labelled by each reviewer ``accept`` (kept
  unchanged), ``edit`` (kept, some field changed) or ``reject`` (removed); reported over all
  criteria and per tier of the draft criterion;
- **rubric decision**: ``approved`` / ``rejected`` per rubric.

Cohen's kappa needs exactly two raters: it is computed over the units that two reviewers labelled
(first and second reviewer by submission order). Krippendorff's alpha (nominal) takes every
reviewer of every unit, missing ratings allowed; it comes from the ``krippendorff`` package.
Both are None when undefined (fewer than two units, or one label only).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from promedical.core.metrics import cohens_kappa
from promedical.core.rubric import TIERS, Rubric
from promedical.review.team import Review, TeamStore

CRITERION_LABELS = ("accept", "edit", "reject")


def krippendorff_alpha(units: list[dict[str, str]]) -> float | None:
    """Nominal alpha of ``units`` (each a {rater: label} dict; raters may be missing)."""
    import krippendorff

    raters = sorted({r for u in units for r in u})
    labels = sorted({v for u in units for v in u.values()})
    pairable = [u for u in units if len(u) >= 2]
    if len(pairable) < 2 or len(labels) < 2:
        return None  # undefined: nothing to compare, or one label only (no expected disagreement)
    code = {v: i for i, v in enumerate(labels)}
    data = np.full((len(raters), len(units)), np.nan)
    for j, u in enumerate(units):
        for r, v in u.items():
            data[raters.index(r), j] = code[v]
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))


def _stats(units: list[dict[str, str]]) -> dict:
    """kappa over the two-rater units, alpha over all, and the raw share of agreeing pairs."""
    pairs = [list(u.values())[:2] for u in units if len(u) >= 2]
    agree = sum(a == b for a, b in pairs)
    return {"units": len(units), "pairs": len(pairs),
            "observed_agreement": agree / len(pairs) if pairs else None,
            "kappa": cohens_kappa([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 2 else None,
            "alpha": krippendorff_alpha(units)}


def criterion_labels(draft: Rubric, reviewed: Rubric) -> dict[str, str]:
    """Draft criterion id -> accept | edit | reject, as one reviewer decided it."""
    after = {c.id: c.to_dict() for c in reviewed.criteria}
    return {c.id: "reject" if c.id not in after else "accept" if after[c.id] == c.to_dict() else "edit"
            for c in draft.criteria}


def agreement_units(team: TeamStore, round: int | None = None) -> dict:
    """The rating units of a round's multi-reviewed rubrics (only rubrics every reviewer submitted)."""
    rnd = team.round(round)["round"]
    by_rubric: dict[str, list[Review]] = defaultdict(list)
    for r in team.reviews(rnd):
        by_rubric[r.rubric_id].append(r)
    decision, criteria, tiers = [], [], defaultdict(list)
    for rid, reviews in by_rubric.items():
        assigned = team.assignments(rnd, rubric_id=rid)
        if len(assigned) < 2 or len(reviews) < len(assigned):
            continue
        decision.append({r.reviewer: r.decision for r in reviews})
        draft = team.store.get(rid, assigned[0].base_revision).rubric
        labels = {r.reviewer: criterion_labels(draft, r.rubric) for r in reviews}
        for c in draft.criteria:
            unit = {who: lab[c.id] for who, lab in labels.items()}
            criteria.append(unit)
            tiers[c.tier].append(unit)
    return {"round": rnd, "rubric_decision": decision, "criterion_decision": criteria, "per_tier": dict(tiers)}


def round_agreement(team: TeamStore, round: int | None = None) -> dict:
    """Agreement of a round: rubric decision, criterion decision, and criterion decision per tier."""
    units = agreement_units(team, round)
    return {"round": units["round"], "double_reviewed": len(units["rubric_decision"]),
            "rubric_decision": _stats(units["rubric_decision"]),
            "criterion_decision": _stats(units["criterion_decision"]),
            "per_tier": {t: _stats(units["per_tier"][t]) for t in TIERS if t in units["per_tier"]}}

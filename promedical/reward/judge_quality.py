"""The judge measured against labels: coverage (share of known judgments) and agreement with gold or
imported per-criterion labels — accuracy overall and per tier, veto F1, Cohen's kappa."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from promedical.core.rubric import TIERS, Rubric
from promedical.reward.judge import Judgment, _by_id


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def coverage(judgments: Sequence[Judgment]) -> dict:
    """Known/total overall and per tier, and counts by source."""
    per_tier = {}
    for tier in TIERS:
        js = [j for j in judgments if j.tier == tier]
        known = sum(j.met is not None for j in js)
        per_tier[tier] = {"total": len(js), "known": known, "coverage": _ratio(known, len(js))}
    known = sum(j.met is not None for j in judgments)
    sources = {s: sum(j.source == s for j in judgments) for s in ("check", "llm", "unknown")}
    return {"total": len(judgments), "known": known, "unknown": len(judgments) - known,
            "coverage": _ratio(known, len(judgments)), "per_tier": per_tier, "sources": sources}


def judge_agreement(judgments: Sequence[Judgment], gold: Mapping[tuple[str, str], Mapping[str, bool]],
              rubrics_by_id: Mapping[str, Rubric] | Iterable[Rubric]) -> dict:
    """Agreement of judgments with gold labels.

    accuracy (overall, per tier) is over known judgments that have a gold label; coverage is known/total;
    veto precision/recall/F1 take "violated" as positive, with unknown vetoes counted apart (never as
    negatives). Judgments without a gold label are counted in ``no_gold`` and left out.
    """
    rubrics = _by_id(rubrics_by_id)
    rows = []
    no_gold = 0
    for j in judgments:
        label = gold.get((j.prompt_id, j.response_id), {}).get(j.criterion_id)
        if label is None:
            no_gold += 1
            continue
        rubric = rubrics.get(j.prompt_id)
        crit = next((c for c in rubric.criteria if c.id == j.criterion_id), None) if rubric else None
        if crit is None:
            raise KeyError(f"judgment names an unknown criterion {j.prompt_id}/{j.criterion_id}")
        rows.append((crit.tier, j.met, bool(label)))

    def block(sel):
        known = [(m, g) for _, m, g in sel if m is not None]
        correct = sum(m == g for m, g in known)
        return {"total": len(sel), "known": len(known), "correct": correct,
                "accuracy": _ratio(correct, len(known)), "coverage": _ratio(len(known), len(sel))}

    vetoes = [(m, g) for t, m, g in rows if t == "veto"]
    tp = sum(m is True and g for m, g in vetoes)
    fp = sum(m is True and not g for m, g in vetoes)
    fn = sum(m is False and g for m, g in vetoes)
    tn = sum(m is False and not g for m, g in vetoes)
    unknown = sum(m is None for m, _ in vetoes)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = (2 * precision * recall / (precision + recall) if precision + recall else 0.0) \
        if precision is not None and recall is not None else None
    return {**block(rows), "per_tier": {t: block([r for r in rows if r[0] == t]) for t in TIERS},
            "veto": {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "unknown": unknown,
                     "unknown_violated": sum(m is None and g for m, g in vetoes),
                     "precision": precision, "recall": recall, "f1": f1},
            "no_gold": no_gold}

"""Judge / reward-model quality on gold-labelled candidates (the paper's ProMedical-Bench table).

Pointwise accuracy per tier (proficiency, excellence = bonus, safety = veto), pairwise accuracy on
criterion-expanded pairs (overall and safety), safety-veto precision/recall/F1 (violated = positive)
and calibration (ECE), each with a prompt-clustered bootstrap 95% CI.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from .metrics import cluster_bootstrap, ece, mean_or_none, prf
from .pairs import build_datasets
from .rubric import Rubric

# [(messages, response, criteria)] -> rewards per item (CriteriaRewardModel.score_batch)
BatchScorer = Callable[[list[tuple[list[dict], str, list[str]]]], list[list[float]]]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def score_candidates(scorer: BatchScorer, rubrics: Sequence[Rubric], candidates: Sequence[dict], *,
                     batch_size: int = 4, progress: bool = True) -> dict[tuple[str, str, str], float]:
    """Reward for every (prompt, response, criterion); one scorer call per batch of responses."""
    from tqdm.auto import tqdm

    by_id = {r.id: r for r in rubrics}
    out = {}
    bar = tqdm(total=len(candidates), desc="scoring", disable=not progress)
    for start in range(0, len(candidates), batch_size):
        chunk = candidates[start:start + batch_size]
        items = [(by_id[c["prompt_id"]].messages, c["response"], [x.text for x in by_id[c["prompt_id"]].criteria])
                 for c in chunk]
        for cand, rewards in zip(chunk, scorer(items)):
            for c, r in zip(by_id[cand["prompt_id"]].criteria, rewards):
                out[(cand["prompt_id"], cand["response_id"], c.id)] = r
        bar.update(len(chunk))
    bar.close()
    return out


def evaluate(rewards: dict[tuple[str, str, str], float], rubrics: Sequence[Rubric], candidates: Sequence[dict],
             *, reps: int = 1000, seed: int = 0) -> dict:
    """All metrics with CIs from precomputed rewards and the candidates' gold criteria_met."""
    by_id = {r.id: r for r in rubrics}
    point = []
    for cand in candidates:
        for c in by_id[cand["prompt_id"]].criteria:
            r = rewards[(cand["prompt_id"], cand["response_id"], c.id)]
            point.append({"prompt": cand["prompt_id"], "tier": c.tier, "p": sigmoid(r),
                          "gold": bool(cand["criteria_met"][c.id])})
    pairs_ds, _ = build_datasets(rubrics, candidates)
    pairs = []
    for row in pairs_ds["pairs"]:
        margin = (rewards[(row["prompt_id"], row["chosen_id"], row["criterion_id"])]
                  - rewards[(row["prompt_id"], row["rejected_id"], row["criterion_id"])])
        # for a veto the chosen response is the one that does NOT violate: lower P(violated) is correct
        correct = margin < 0 if row["tier"] == "veto" else margin > 0
        pairs.append({"prompt": row["prompt_id"], "tier": row["tier"], "correct": correct})

    def acc(rows, key):
        return mean_or_none([float(key(r)) for r in rows])

    def ci(rows, stat):
        return cluster_bootstrap(rows, lambda r: r["prompt"], stat, reps=reps, seed=seed)

    point_ok = lambda r: (r["p"] > 0.5) == r["gold"]  # noqa: E731
    metrics = {
        "pointwise_accuracy": {tier: ci([r for r in point if r["tier"] == tier], lambda rows: acc(rows, point_ok))
                               for tier in ("proficiency", "bonus", "veto")},
        "pairwise_accuracy": ci(pairs, lambda rows: acc(rows, lambda r: r["correct"])),
        "pairwise_safety_accuracy": ci([r for r in pairs if r["tier"] == "veto"], lambda rows: acc(rows, lambda r: r["correct"])),
        "veto_f1": ci([r for r in point if r["tier"] == "veto"],
                      lambda rows: prf([r["p"] > 0.5 for r in rows], [r["gold"] for r in rows])["f1"]),
        "ece": ci(point, lambda rows: ece([r["p"] for r in rows], [r["gold"] for r in rows]) if rows else None),
    }
    vetoes = [r for r in point if r["tier"] == "veto"]
    metrics["veto_prf"] = prf([r["p"] > 0.5 for r in vetoes], [r["gold"] for r in vetoes])
    metrics["counts"] = {"pointwise": len(point), "pairs": len(pairs), "prompts": len({r["prompt"] for r in point})}
    return metrics

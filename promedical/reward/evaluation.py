"""Judge / reward-model quality on gold-labelled candidates (the paper's ProMedical-Bench table).

Pointwise accuracy per tier (proficiency, excellence = bonus, safety = veto), pairwise accuracy on
criterion-expanded pairs (overall and safety), safety-veto precision/recall/F1 (violated = positive)
and calibration (ECE), each with a prompt-clustered bootstrap 95% CI.

Does the model read the criterion? ``criterion_verdict`` decides it by tests a scalar score fails: the
trained model must beat the base model and the ablation without criteria on same-tier within-response
accuracy and on the pairs against the overall ranking, each paired CI above zero. Secondary,
``criterion_sensitivity`` scores every pair instance again with a
same-tier criterion taken from *another* rubric: a model that learned one "good answer" score keeps
its pairwise accuracy, one that reads the criterion falls toward chance. Within-response accuracy
asks, for one response, whether a criterion it satisfies scores above one it does not — a scalar
reward gives every criterion the same score and sits at 0.5 there.

A reward r is the log-odds of the good side of its criterion (``scoring.is_good``); ``met_probability``
is the one place that turns it into P(criterion met) — for a veto, P(violated).
"""
from __future__ import annotations

import math
import random
from typing import Callable, Mapping, Sequence

from promedical.core.metrics import cluster_bootstrap, ece, mean_or_none, prf
from promedical.core.rubric import TIERS, Criterion, Rubric
from promedical.core.scoring import is_good
from promedical.reward.pairs import build_datasets

# [(messages, response, criteria)] -> rewards per item (CriteriaRewardModel.score_batch)
BatchScorer = Callable[[list[tuple[list[dict], str, list]]], list[list[float]]]


Rewards = dict[tuple[str, str, str], float]  # (prompt_id, response_id, criterion_id) -> r


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def met_probability(tier: str, r: float) -> float:
    """P(criterion met) from r, the log-odds of the good side: sigma(r), or sigma(-r) = P(violated) for a veto."""
    return sigmoid(r) if is_good(tier, True) else sigmoid(-r)


def reward_model_scores(scorer: BatchScorer, rubrics: Sequence[Rubric], candidates: Sequence[dict], *,
                     batch_size: int = 4, progress: bool = True) -> Rewards:
    """Reward for every (prompt, response, criterion); one scorer call per batch of responses."""
    return score_with_substitutes(scorer, rubrics, candidates, {}, batch_size=batch_size, progress=progress)[0]


def score_with_substitutes(scorer: BatchScorer, rubrics: Sequence[Rubric], candidates: Sequence[dict],
                           substitute: Mapping[tuple[str, str], Criterion], *, batch_size: int = 4,
                           progress: bool = True) -> tuple[Rewards, Rewards]:
    """(own rewards, rewards with ``substitute`` = {(prompt_id, criterion_id): criterion read instead}),
    both from the same scorer calls. The substitutes are a second item of the same response (its
    conversation's prefix is shared, not its criteria): a response's own rewards never depend on which
    substitutes are read beside them — in one packed item, their length would change how much of the
    response ``max_length`` keeps, and with it the own rewards (the base model read differently with
    every substitute seed)."""
    from tqdm.auto import tqdm

    by_id = {r.id: r for r in rubrics}
    own, other = {}, {}
    bar = tqdm(total=len(candidates), desc="scoring", disable=not progress)
    for start in range(0, len(candidates), batch_size):
        chunk = candidates[start:start + batch_size]
        items, keys = [], []
        for c in chunk:
            crits = by_id[c["prompt_id"]].criteria
            subs = [x for x in crits if (c["prompt_id"], x.id) in substitute]
            messages = by_id[c["prompt_id"]].messages
            items.append((messages, c["response"], list(crits)))
            keys.append((c, own, [x.id for x in crits]))
            if subs:
                items.append((messages, c["response"], [substitute[(c["prompt_id"], x.id)] for x in subs]))
                keys.append((c, other, [x.id for x in subs]))
        for (cand, target, ids), rewards in zip(keys, scorer(items)):
            for cid, r in zip(ids, rewards):
                target[(cand["prompt_id"], cand["response_id"], cid)] = r
        bar.update(len(chunk))
    bar.close()
    return own, other


def shuffled_criteria(rubrics: Sequence[Rubric], seed: int = 0) -> dict[tuple[str, str], Criterion]:
    """For every criterion, a criterion of the same tier from another rubric (seeded): the input of
    the criterion-sensitivity check."""
    rng = random.Random(seed)
    pool = {t: [(r.id, c) for r in rubrics for c in r.tier(t)] for t in TIERS}
    out = {}
    for r in rubrics:
        for c in r.criteria:
            others = [x for rid, x in pool[c.tier] if rid != r.id]
            if others:
                out[(r.id, c.id)] = rng.choice(others)
    return out


def _pair_rows(rewards: Rewards, pairs_ds, missing_ok: bool = False) -> list[dict]:
    """One row per pair; with ``missing_ok`` a pair whose rewards are missing (a criterion with no
    same-tier substitute, e.g. when a single prompt is evaluated) gets ``correct=None``."""
    rows = []
    for row in pairs_ds:
        keys = [(row["prompt_id"], row[side], row["criterion_id"]) for side in ("chosen_id", "rejected_id")]
        if missing_ok and not all(k in rewards for k in keys):
            rows.append({"prompt": row["prompt_id"], "tier": row["tier"], "correct": None})
            continue
        margin = rewards[keys[0]] - rewards[keys[1]]
        # chosen is the good side of the criterion (for a veto: does not violate), and r is the
        # log-odds of the good side on every tier: a positive margin is correct
        rows.append({"prompt": row["prompt_id"], "tier": row["tier"], "correct": margin > 0,
                     "agrees_with_pair": row["agrees_with_pair"]})
    return rows


def labelled(candidate: dict, criteria: Sequence[Criterion]) -> list[Criterion]:
    """The criteria a candidate has a known label for (a missing or null ``criteria_met`` entry is unknown:
    left out of every metric, never read as "not met")."""
    return [c for c in criteria if candidate["criteria_met"].get(c.id) is not None]


def within_response_rows(rewards: Rewards, rubrics: Sequence[Rubric], candidates: Sequence[dict]) -> list[dict]:
    """For each response, every (criterion it satisfies, criterion it does not) pair: correct when the
    first scores higher (ties count half)."""
    by_id = {r.id: r for r in rubrics}
    rows = []
    for cand in candidates:
        crits = labelled(cand, by_id[cand["prompt_id"]].criteria)
        good = [c for c in crits if is_good(c.tier, cand["criteria_met"][c.id])]
        bad = [c for c in crits if not is_good(c.tier, cand["criteria_met"][c.id])]
        for g in good:
            for b in bad:
                d = (rewards[(cand["prompt_id"], cand["response_id"], g.id)]
                     - rewards[(cand["prompt_id"], cand["response_id"], b.id)])
                rows.append({"prompt": cand["prompt_id"], "same_tier": g.tier == b.tier,
                             "correct": 1.0 if d > 0 else 0.5 if d == 0 else 0.0})
    return rows


def evaluate(rewards: Rewards, rubrics: Sequence[Rubric], candidates: Sequence[dict], *, reps: int = 1000,
             seed: int = 0, shuffled: Rewards | None = None, veto_threshold: float = 0.5) -> dict:
    """All metrics with CIs from precomputed rewards and the candidates' gold criteria_met.
    ``shuffled``: rewards of the same candidates read with ``shuffled_criteria`` (adds
    ``criterion_sensitivity``). ``veto_threshold``: a veto is flagged when P(violated) exceeds it (veto F1 and
    ``veto_prf``; ``choose_veto_threshold`` picks one on a validation split)."""
    by_id = {r.id: r for r in rubrics}
    point = []
    for cand in candidates:
        for c in labelled(cand, by_id[cand["prompt_id"]].criteria):
            r = rewards[(cand["prompt_id"], cand["response_id"], c.id)]
            point.append({"prompt": cand["prompt_id"], "tier": c.tier, "p": met_probability(c.tier, r),
                          "gold": bool(cand["criteria_met"][c.id])})
    pairs_ds, _ = build_datasets(rubrics, candidates)
    pairs = _pair_rows(rewards, pairs_ds["pairs"])
    within = within_response_rows(rewards, rubrics, candidates)

    def ci(rows, stat):
        return cluster_bootstrap(rows, lambda r: r["prompt"], stat, reps=reps, seed=seed)

    def accuracy(rows):
        return ci(rows, lambda rs: mean_or_none([float(r["correct"]) for r in rs]))

    point_ok = lambda r: (r["p"] > 0.5) == r["gold"]  # noqa: E731
    metrics = {
        "pointwise_accuracy": {tier: ci([r for r in point if r["tier"] == tier],
                                        lambda rows: mean_or_none([float(point_ok(r)) for r in rows]))
                               for tier in TIERS},
        "pairwise_accuracy": accuracy(pairs),
        "pairwise_safety_accuracy": accuracy([r for r in pairs if r["tier"] == "veto"]),
        "pairwise_disagreeing_accuracy": accuracy([r for r in pairs if not r["agrees_with_pair"]]),
        "within_response_accuracy": accuracy(within),
        # same tier only: a model that learned tier priors (vetoes usually free, bonuses often missed)
        # but not the criterion's text gains nothing here
        "within_response_same_tier_accuracy": accuracy([r for r in within if r["same_tier"]]),
        "veto_f1": ci([r for r in point if r["tier"] == "veto"],
                      lambda rows: prf([r["p"] > veto_threshold for r in rows], [r["gold"] for r in rows])["f1"]),
        "ece": ci(point, lambda rows: ece([r["p"] for r in rows], [r["gold"] for r in rows]) if rows else None),
    }
    vetoes = [r for r in point if r["tier"] == "veto"]
    metrics["veto_prf"] = prf([r["p"] > veto_threshold for r in vetoes], [r["gold"] for r in vetoes])
    metrics["veto_threshold"] = veto_threshold
    metrics["counts"] = {"pointwise": len(point), "pairs": len(pairs), "prompts": len({r["prompt"] for r in point}),
                         "pairs_disagreeing": sum(not r["agrees_with_pair"] for r in pairs)}
    if shuffled is not None:
        metrics["criterion_sensitivity"] = criterion_sensitivity(pairs, _pair_rows(shuffled, pairs_ds["pairs"], missing_ok=True),
                                                                 reps=reps, seed=seed)
    return metrics


def criterion_sensitivity(own: list[dict], shuffled: list[dict], *, reps: int = 1000, seed: int = 0) -> dict:
    """Pairwise accuracy with the right criterion vs a same-tier criterion of another rubric, per tier and
    overall, and the gap with a prompt-clustered CI. ``reads_criterion``: the gap's CI lies above 0."""
    rows = [{"prompt": a["prompt"], "tier": a["tier"], "own": float(a["correct"]), "shuffled": float(b["correct"])}
            for a, b in zip(own, shuffled) if b["correct"] is not None]
    out = {}
    for name, sel in [("all", rows)] + [(t, [r for r in rows if r["tier"] == t]) for t in TIERS]:
        boot = lambda stat: cluster_bootstrap(sel, lambda r: r["prompt"], stat, reps=reps, seed=seed)  # noqa: E731
        out[name] = {"own": boot(lambda rs: mean_or_none([r["own"] for r in rs])),
                     "shuffled": boot(lambda rs: mean_or_none([r["shuffled"] for r in rs])),
                     "gap": boot(lambda rs: mean_or_none([r["own"] - r["shuffled"] for r in rs]))}
    lo = out["all"]["gap"]["ci"][0]
    out["reads_criterion"] = lo is not None and lo > 0
    out["pairs_with_substitute"] = len(rows)  # a pair whose criterion has no same-tier substitute is left out
    return out


def compare(base: Rewards, trained: Rewards, rubrics: Sequence[Rubric], candidates: Sequence[dict], *,
            reps: int = 1000, seed: int = 0, cluster: Callable[[str], str] | None = None,
            veto_thresholds: tuple[float, float] = (0.5, 0.5)) -> dict:
    """Trained minus base (or minus any other model: the ablation) on the same gold candidates, with 95% CIs
    paired over prompts (whole prompts resampled, both models on the same resample): pairwise accuracy,
    pairwise safety accuracy, pairwise accuracy on the instances against the overall ranking, veto F1 (an
    undefined F1 — nothing flagged — counts as 0), within-response accuracy (all, and same tier) and ECE
    (lower is better: a negative difference is a gain). ``cluster``: prompt id -> the unit resampled (default
    the prompt itself; ``pool_seeds`` maps its per-seed copies of a prompt back to the prompt).
    ``veto_thresholds``: (base, trained) P(violated) above which a veto is flagged."""
    by_id = {r.id: r for r in rubrics}
    pairs_ds = build_datasets(rubrics, candidates)[0]["pairs"]
    pairs = [{"prompt": a["prompt"], "tier": a["tier"], "agrees": a["agrees_with_pair"],
              "d": float(b["correct"]) - float(a["correct"])}
             for a, b in zip(_pair_rows(base, pairs_ds), _pair_rows(trained, pairs_ds))]
    within = [{"prompt": a["prompt"], "same_tier": a["same_tier"], "d": b["correct"] - a["correct"]}
              for a, b in zip(within_response_rows(base, rubrics, candidates), within_response_rows(trained, rubrics, candidates))]
    point = [{"prompt": c["prompt_id"], "gold": bool(c["criteria_met"][x.id]),
              **{name: met_probability(x.tier, rewards[(c["prompt_id"], c["response_id"], x.id)])
                 for name, rewards in (("base", base), ("trained", trained))}}
             for c in candidates for x in labelled(c, by_id[c["prompt_id"]].criteria)]
    vetoes = [{"prompt": c["prompt_id"], "gold": bool(c["criteria_met"][v.id]),
               "base": met_probability("veto", base[(c["prompt_id"], c["response_id"], v.id)]) > veto_thresholds[0],
               "trained": met_probability("veto", trained[(c["prompt_id"], c["response_id"], v.id)]) > veto_thresholds[1]}
              for c in candidates for v in labelled(c, by_id[c["prompt_id"]].tier("veto"))]

    def f1(rows, key):
        return prf([r[key] for r in rows], [r["gold"] for r in rows])["f1"] or 0.0

    def boot(rows, stat):
        return cluster_bootstrap(rows, lambda r: (cluster or str)(r["prompt"]), stat, reps=reps, seed=seed)

    def ece_d(rows):
        gold = [r["gold"] for r in rows]
        return ece([r["trained"] for r in rows], gold) - ece([r["base"] for r in rows], gold) if rows else None

    mean_d = lambda rs: mean_or_none([r["d"] for r in rs])  # noqa: E731
    return {"pairwise_accuracy": boot(pairs, mean_d),
            "pairwise_safety_accuracy": boot([r for r in pairs if r["tier"] == "veto"], mean_d),
            "pairwise_disagreeing_accuracy": boot([r for r in pairs if not r["agrees"]], mean_d),
            "within_response_accuracy": boot(within, mean_d),
            "within_response_same_tier_accuracy": boot([r for r in within if r["same_tier"]], mean_d),
            "veto_f1": boot(vetoes, lambda rs: f1(rs, "trained") - f1(rs, "base") if rs else None),
            "ece": boot(point, ece_d)}


# The tests that only a model reading the criterion passes: on same-tier within-response pairs only the
# criterion's text separates the two scores (a scalar reads 0.5), and on disagreeing pairs the criterion's
# winner is the overall loser (a quality score reads them wrong).
READS_CRITERION_TESTS = ("within_response_same_tier_accuracy", "pairwise_disagreeing_accuracy")

# what the decision needs from an evaluation set (issue 24): enough instances of each test for a CI that decides
MIN_DECISION_INSTANCES = {"within_response_same_tier_accuracy": 200, "pairwise_disagreeing_accuracy": 60}


def decision_instances(rubrics: Sequence[Rubric], candidates: Sequence[dict]) -> dict:
    """How many instances each ``READS_CRITERION_TESTS`` metric has on these gold candidates (no model: the
    counts ``evaluate`` and ``compare`` bootstrap over), with the prompts and candidates they come from and
    ``enough``: every count at least ``MIN_DECISION_INSTANCES``."""
    wanted = {c["prompt_id"] for c in candidates}
    rubrics = [r for r in rubrics if r.id in wanted]
    pairs = build_datasets(rubrics, candidates)[0]["pairs"]
    same_tier = sum(r["same_tier"] for r in within_response_rows(_NoRewards(), rubrics, candidates))
    counts = {"within_response_same_tier_accuracy": same_tier,
              "pairwise_disagreeing_accuracy": sum(not a for a in pairs["agrees_with_pair"])}
    return {"prompts": len(wanted), "candidates": len(candidates), "pair_instances": len(pairs), **counts,
            "enough": all(counts[k] >= n for k, n in MIN_DECISION_INSTANCES.items())}


# ---------------------------------------------------------------- safety-first selection on a validation split
def choose_veto_threshold(rewards: Rewards, rubrics: Sequence[Rubric], candidates: Sequence[dict]) -> dict:
    """The P(violated) threshold that maximises veto F1 on these (validation) candidates, instead of 0.5: every
    midpoint between two consecutive distinct P(violated) values, and 0.5 itself; a tie goes to the threshold
    nearest 0.5. {"threshold", "f1" (None with no veto or no violation), "n": veto grades}."""
    by_id = {r.id: r for r in rubrics}
    rows = [(met_probability("veto", rewards[(c["prompt_id"], c["response_id"], v.id)]), bool(c["criteria_met"][v.id]))
            for c in candidates for v in labelled(c, by_id[c["prompt_id"]].tier("veto"))]
    ps = sorted({p for p, _ in rows})
    options = sorted({0.5, *((a + b) / 2 for a, b in zip(ps, ps[1:]))})
    if ps:  # flag everything / nothing
        options = sorted({*options, ps[0] - 1e-9, ps[-1]})

    def f1(th):
        return prf([p > th for p, _ in rows], [g for _, g in rows])["f1"]

    scored = [(f1(th), th) for th in options]
    best = max(scored, key=lambda s: (s[0] if s[0] is not None else -1.0, -abs(s[1] - 0.5)))
    if best[0] is None:
        return {"threshold": 0.5, "f1": None, "n": len(rows)}
    return {"threshold": best[1], "f1": best[0], "n": len(rows)}


SAFETY_METRICS = ("pairwise_safety_accuracy", "veto_f1")


def select_checkpoint(points: Mapping[str, dict], base: dict, *, objective: str = "pairwise_accuracy") -> dict:
    """Safety first, on validation metrics (``evaluate`` outputs) per step: among the steps whose pairwise safety
    and veto F1 are both at least the base model's, the one with the best ``objective`` (ties: the earlier
    step); none qualifies -> step 0, the base model. An undefined F1 counts as 0. {"step", "eligible", "why"}."""
    def value(m, key):
        v = (m.get(key) or {}).get("value")
        return 0.0 if v is None else v

    eligible = [s for s, m in points.items() if all(value(m, k) >= value(base, k) for k in SAFETY_METRICS)]
    if not eligible:
        return {"step": 0, "eligible": [], "why": "no step keeps pairwise safety and veto F1 at the base's: the base"}
    step = max(eligible, key=lambda s: (value(points[s], objective), -int(s)))
    return {"step": int(step), "eligible": sorted(int(s) for s in eligible),
            "why": f"best validation {objective} among the steps that keep pairwise safety and veto F1 >= base"}


SEED_TAG = "@seed"


def pool_seeds(rewards_by_seed: Mapping[int, Rewards], rubrics: Sequence[Rubric],
               candidates: Sequence[dict]) -> tuple[Rewards, list[Rubric], list[dict]]:
    """Several training seeds' rewards on the same gold candidates as one evaluation set: every seed gets its
    own copy of each prompt (``<prompt_id>@seed<s>``, so pairs never mix seeds), to be compared with
    ``compare(..., cluster=unpooled_prompt)``: the bootstrap resamples whole prompts with all their seeds'
    rows, so the CI of a pooled paired difference counts each prompt once. Give two models the same seeds."""
    from dataclasses import replace

    rewards, pooled_rubrics, pooled_cands = {}, [], []
    for s, by_key in rewards_by_seed.items():
        tag = f"{SEED_TAG}{s}"
        pooled_rubrics += [replace(r, id=r.id + tag) for r in rubrics]
        pooled_cands += [{**c, "prompt_id": c["prompt_id"] + tag} for c in candidates]
        rewards.update({(p + tag, rid, cid): v for (p, rid, cid), v in by_key.items()})
    return rewards, pooled_rubrics, pooled_cands


def unpooled_prompt(prompt_id: str) -> str:
    """The prompt a ``pool_seeds`` copy came from."""
    return prompt_id.rsplit(SEED_TAG, 1)[0]


class _NoRewards(dict):
    """Every reward 0: the rows of ``within_response_rows`` without a model (only their number is used)."""

    def __missing__(self, key):
        return 0.0


def criterion_verdict(comparisons: Mapping[str, dict], shuffle_check: dict | None = None) -> dict:
    """Does the trained model read the criterion? ``comparisons``: {opponent: ``compare(opponent, trained)``}
    — the base model and, when trained, the ablation. True only when the trained model beats every
    opponent on every ``READS_CRITERION_TESTS`` metric with the paired 95% CI above zero (a test without
    instances fails). ``decided_by``: the test with the lowest CI bound — the one that failed, or the
    closest of the passes — with its difference, CI and instances. ``shuffle_check`` (secondary, reported
    only): ``criterion_sensitivity`` of the trained model."""
    tests = []
    for opponent, diff in comparisons.items():
        for metric in READS_CRITERION_TESTS:
            cell = diff.get(metric) or {}
            lo = (cell.get("ci") or [None])[0]
            tests.append({"metric": metric, "against": opponent, "difference": cell.get("value"),
                          "ci": cell.get("ci"), "n": cell.get("n", 0), "prompts": cell.get("clusters", 0),
                          "passed": lo is not None and lo > 0})
    decided = min(tests, key=lambda t: (t["ci"] or [None])[0] if (t["ci"] or [None])[0] is not None else -math.inf,
                  default=None)
    return {"reads_criterion": bool(tests) and all(t["passed"] for t in tests), "decided_by": decided,
            "tests": tests, "shuffle_check": None if shuffle_check is None else {
                "reads_criterion": shuffle_check["reads_criterion"], "gap": shuffle_check["all"]["gap"],
                "pairs": shuffle_check["pairs_with_substitute"]}}

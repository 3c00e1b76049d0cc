"""Benchmark statistics: means with bootstrap CIs, paired differences, correlations, per-group summaries."""
from __future__ import annotations

import math
import random
from typing import Mapping, Sequence

from promedical.core.metrics import cluster_bootstrap, mean_or_none

METRICS = ("rubric_score", "s1", "s2", "safety", "reward", "healthbench")


def mean_ci(values: Sequence[float], reps: int = 1000, seed: int = 0, clip: tuple[float, float] | None = None) -> dict:
    """Mean with a percentile bootstrap 95% CI (items resampled); ``clip`` bounds the mean (HealthBench
    clips its aggregate score to [0, 1] while single examples can go negative)."""
    def stat(rows):
        m = mean_or_none([x for _, x in rows])
        return m if m is None or clip is None else min(max(m, clip[0]), clip[1])

    return cluster_bootstrap(list(enumerate(values)), lambda r: r[0], stat, reps=reps, seed=seed)


def paired(a: Mapping[str, float], b: Mapping[str, float], *, reps: int = 2000, seed: int = 0) -> dict:
    """b - a on the items both have: mean difference with a paired-bootstrap 95% CI, a two-sided
    sign-flip permutation p-value, and the effect size d_z = mean(diff) / sd(diff)."""
    items = sorted(set(a) & set(b))
    diffs = [b[k] - a[k] for k in items]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "diff": None, "ci": [None, None], "p": None, "effect_size_dz": None}
    observed = sum(diffs) / n
    rng = random.Random(seed)
    boots = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(reps))
    extreme = sum(abs(sum(d if rng.random() < 0.5 else -d for d in diffs) / n) >= abs(observed) - 1e-12
                  for _ in range(reps))
    sd = math.sqrt(sum((d - observed) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    return {"n": n, "diff": observed, "ci": [boots[int(0.025 * (reps - 1))], boots[int(0.975 * (reps - 1))]],
            "p": (extreme + 1) / (reps + 1), "effect_size_dz": observed / sd if sd > 0 else None}


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    n = len(x)
    if n < 3:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sx, sy = math.sqrt(sum((a - mx) ** 2 for a in x)), math.sqrt(sum((b - my) ** 2 for b in y))
    return sxy / (sx * sy) if sx > 0 and sy > 0 else None


def ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    k = 0
    while k < len(order):
        j = k
        while j + 1 < len(order) and values[order[j + 1]] == values[order[k]]:
            j += 1
        for i in order[k:j + 1]:
            out[i] = (k + j) / 2
        k = j + 1
    return out


def groups(rows: Sequence[dict], key: str) -> dict:
    """Per value of ``key`` (category, specialty): n, rubric score and safety, each mean with a 95% CI."""
    out = {}
    for value in sorted({str(g[key]) for g in rows}):
        sel = [g for g in rows if str(g[key]) == value]
        out[value] = {"n": len(sel), **{k: mean_ci([g[k] for g in sel if g[k] is not None])
                                        for k in ("rubric_score", "safety")}}
    return out


def summarize(graded: Sequence[dict], baseline: str | None = None) -> dict:
    """Per model (and grader): every metric with a CI, per category and specialty, paired comparisons
    of each model against ``baseline`` (default: the first model), and the length-score correlation."""
    out: dict = {}
    for grader in dict.fromkeys(g["grader"] for g in graded):
        rows = [g for g in graded if g["grader"] == grader]
        models = list(dict.fromkeys(g["model"] for g in rows))
        base = baseline if baseline in models else models[0]
        per_model = {}
        for m in models:
            mine = [g for g in rows if g["model"] == m]
            per_model[m] = {"n": len(mine), **{k: mean_ci([g[k] for g in mine if g[k] is not None],
                                                          clip=(0.0, 1.0) if k == "healthbench" else None)
                                               for k in METRICS},
                            **{f"by_{key}": groups(mine, key) for key in ("category", "specialty")}}
        comparisons = {}
        for m in models:
            prompts = [g["prompt_id"] for g in rows if g["model"] == m]
            if m == base or len(prompts) != len(set(prompts)):  # not one answer per item (reference answers): unpaired
                continue
            comparisons[f"{m} vs {base}"] = {k: paired({g["prompt_id"]: g[k] for g in rows if g["model"] == base and g[k] is not None},
                                                       {g["prompt_id"]: g[k] for g in rows if g["model"] == m and g[k] is not None})
                                             for k in METRICS}
        scored = [g for g in rows if g["rubric_score"] is not None]
        lengths, scores = [g["length"] for g in scored], [g["rubric_score"] for g in scored]
        out[grader] = {"models": per_model, "baseline": base, "comparisons": comparisons,
                       "length_score": {"n": len(scored), "pearson": pearson(lengths, scores),
                                        "spearman": pearson(ranks(lengths), ranks(scores))}}
    return out

"""Small statistics used by the judge, reward-model and benchmark reports: CIs, P/R/F1, calibration."""
from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Callable, Sequence


def prf(pred: Sequence[bool], gold: Sequence[bool]) -> dict:
    """Precision, recall and F1 with True as the positive class (None where undefined)."""
    tp = sum(p and g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    fn = sum(g and not p for p, g in zip(pred, gold))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if precision is not None and recall is not None else None)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def ece(probs: Sequence[float], labels: Sequence[bool], bins: int = 10) -> float:
    """Expected calibration error with equal-width bins."""
    total, err = len(probs), 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if idx:
            conf = sum(probs[i] for i in idx) / len(idx)
            acc = sum(labels[i] for i in idx) / len(idx)
            err += len(idx) / total * abs(conf - acc)
    return err


def cluster_bootstrap(rows: Sequence, cluster: Callable, statistic: Callable[[list], float | None], *,
                      reps: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Point estimate and percentile CI, resampling whole clusters (e.g. all rows of one prompt)."""
    groups: dict = defaultdict(list)
    for r in rows:
        groups[cluster(r)].append(r)
    keys = list(groups)
    estimate = statistic(list(rows))
    rng = random.Random(seed)
    samples = []
    for _ in range(reps):
        sample = [r for k in rng.choices(keys, k=len(keys)) for r in groups[k]]
        value = statistic(sample)
        if value is not None and not math.isnan(value):
            samples.append(value)
    if not samples or estimate is None:
        return {"value": estimate, "ci": [None, None], "n": len(rows), "clusters": len(keys)}
    samples.sort()
    lo = samples[int((1 - level) / 2 * (len(samples) - 1))]
    hi = samples[int((1 + level) / 2 * (len(samples) - 1))]
    return {"value": estimate, "ci": [lo, hi], "n": len(rows), "clusters": len(keys)}


def mean_or_none(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------------------------
# Analytics
# ----------------------------------------------------------------------------------------------
def cohens_kappa(a: list, b: list) -> float | None:
    """Cohen's kappa of two raters' labels; None with fewer than 2 items or when undefined."""
    if len(a) != len(b):
        raise ValueError("both raters must label the same items")
    n = len(a)
    if n < 2:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in ca.keys() | cb.keys()) / (n * n)
    return None if pe == 1 else (po - pe) / (1 - pe)

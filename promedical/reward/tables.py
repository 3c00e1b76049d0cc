"""Result tables for the notebooks (pandas DataFrames): what a reader compares, not printed dicts.

Each cell of a metric with a CI reads "value [low, high]"; the data stay in the step's JSON files.
"""
from __future__ import annotations

from promedical.core.rubric import TIERS


def with_ci(cell: dict | None, digits: int = 3) -> str:
    if not cell or cell.get("value") is None:
        return "n/a"
    lo, hi = cell.get("ci") or (None, None)
    v = f"{cell['value']:.{digits}f}"
    return v if lo is None else f"{v} [{lo:.{digits}f}, {hi:.{digits}f}]"


RM_METRICS = {  # metrics.json key -> label
    "pairwise_accuracy": "pairwise accuracy",
    "pairwise_safety_accuracy": "pairwise safety accuracy",
    "pairwise_disagreeing_accuracy": "pairwise, instances against the overall ranking",
    "within_response_accuracy": "within-response (criterion met > missed)",
    "within_response_same_tier_accuracy": "within-response, same tier",
    "veto_f1": "veto F1 (violated = positive)",
    "ece": "calibration error (ECE)",
}


def reward_model_quality(metrics: dict):
    """Base vs trained reward model on the gold benchmark candidates, with the paired difference."""
    import pandas as pd

    rows = []
    for key, label in [(f"pointwise_{t}", f"pointwise accuracy · {t}") for t in TIERS] + list(RM_METRICS.items()):
        row = {"metric": label}
        for name in ("base", "trained"):
            m = metrics.get(name) or {}
            row[name] = with_ci(m["pointwise_accuracy"].get(key.split("_", 1)[1]) if key.startswith("pointwise_")
                                else m.get(key))
        diff = (metrics.get("trained_vs_base") or {}).get(key)
        row["trained − base (paired over prompts)"] = with_ci(diff) if diff else ""
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def criterion_sensitivity(metrics: dict):
    """Pairwise accuracy with each item's own criterion vs a same-tier criterion of another rubric."""
    import pandas as pd

    rows = []
    for name in ("base", "trained"):
        s = (metrics.get(name) or {}).get("criterion_sensitivity")
        if not s:
            continue
        for tier in ("all", *TIERS):
            rows.append({"model": name, "tier": tier, "own criterion": with_ci(s[tier]["own"]),
                         "shuffled criterion": with_ci(s[tier]["shuffled"]), "gap": with_ci(s[tier]["gap"])})
        rows.append({"model": name, "tier": "reads the criterion (gap CI above 0)",
                     "own criterion": "", "shuffled criterion": "", "gap": "yes" if s["reads_criterion"] else "no"})
    return pd.DataFrame(rows)


def counts(card: dict):
    """A dataset card's counts as one table (pairs by reason, instances and pointwise labels by tier)."""
    import pandas as pd

    cards = {k: v for k, v in card.items() if isinstance(v, dict) and "instances" in v} or {"dataset": card}
    rows = []
    for name, c in cards.items():
        rows.append({"labels": name, "prompts": c.get("prompts"), "candidates": c.get("candidates"),
                     "pairs": c.get("pairs"), "ties dropped": c.get("ties_dropped"),
                     **{f"instances · {t}": c["instances"].get(t) for t in TIERS},
                     **{f"pointwise · {t}": c["pointwise"].get(t) for t in TIERS}})
    return pd.DataFrame(rows).set_index("labels")

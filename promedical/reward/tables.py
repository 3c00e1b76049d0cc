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


SIDE_BY_SIDE = ("pairwise_accuracy", "pairwise_safety_accuracy", "veto_f1", "within_response_same_tier_accuracy",
                "pairwise_disagreeing_accuracy", "ece")


def with_ablation(metrics: dict):
    """The criterion model beside the ablation without criteria (and the base model), each metric with its
    CI, and the paired differences trained − base and trained − ablation (ECE: lower is better)."""
    import pandas as pd

    rows = []
    for key in SIDE_BY_SIDE:
        row = {"metric": RM_METRICS[key]}
        for name in ("base", "ablation", "trained"):
            row[name] = with_ci((metrics.get(name) or {}).get(key))
        for opponent in ("base", "ablation"):
            diff = (metrics.get(f"trained_vs_{opponent}") or {}).get(key)
            row[f"trained − {opponent} (paired)"] = with_ci(diff) if diff else ""
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def selection(stats: dict):
    """The safety-first selection (``val_prompts``) step by step on the validation split: each read step's
    pairwise accuracy, pairwise safety and veto F1 at its chosen veto threshold, whether it kept both safety
    metrics at the base's (step 0), and ◀ at the step whose weights were saved."""
    import pandas as pd

    sel = stats.get("selection") if stats else None
    if not sel:
        return "val_prompts=0: no selection (the last step, veto threshold 0.5)"
    rows = []
    for step, m in sorted(sel["validation"].items(), key=lambda kv: int(kv[0])):
        rows.append({"step": int(step), "pairwise accuracy": with_ci(m["pairwise_accuracy"]),
                     "pairwise safety": with_ci(m["pairwise_safety_accuracy"]), "veto F1": with_ci(m["veto_f1"]),
                     "veto threshold": round(m["veto_threshold"]["threshold"], 3),
                     "safety ≥ base": "base" if step == "0" else ("yes" if int(step) in sel["eligible"] else "no"),
                     "chosen": "◀" if int(step) == sel["step"] else ""})
    return pd.DataFrame(rows).set_index("step")


def reads_criterion(metrics: dict):
    """The verdict "reads the criterion" and its tests: the criterion model against each opponent on the
    tests a scalar score fails (paired CI above zero to pass), the one that decided it, and the
    shuffled-criterion check as a secondary row."""
    import pandas as pd

    verdict = metrics.get("reads_criterion")
    if not verdict:
        return pd.DataFrame()
    rows = [{"test": f"{RM_METRICS[t['metric']]} · trained − {t['against']}",
             "difference [95% CI]": with_ci({"value": t["difference"], "ci": t["ci"]}), "instances": t["n"],
             "passed": "yes" if t["passed"] else "no",
             "decided": "◀" if t == verdict["decided_by"] else ""} for t in verdict["tests"]]
    shuffle = verdict.get("shuffle_check")
    if shuffle:
        rows.append({"test": "secondary: own − shuffled criterion (pairwise)", "difference [95% CI]": with_ci(shuffle["gap"]),
                     "instances": shuffle["pairs"], "passed": "yes" if shuffle["reads_criterion"] else "no", "decided": ""})
    rows.append({"test": "reads the criterion (every test above the line passed)", "difference [95% CI]": "",
                 "instances": "", "passed": "yes" if verdict["reads_criterion"] else "no", "decided": ""})
    return pd.DataFrame(rows).set_index("test")


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


def candidates_table(candidates: list[dict], n: int = 6, chars: int = 120):
    """The first ``n`` candidates: ids, where each came from, and the start of the response."""
    import pandas as pd

    rows = [{"prompt_id": c["prompt_id"], "response_id": c["response_id"], "source": c.get("source"),
             "temperature": c.get("temperature"), "response": _excerpt(c["response"], chars)} for c in candidates[:n]]
    return pd.DataFrame(rows, columns=["prompt_id", "response_id", "source", "temperature", "response"])


def judge_check(report: dict):
    """The judge against gold labels (and imported labels, when any): accuracy and coverage overall and
    per tier, veto F1 (violated = positive) and the swap consistency of its pairwise adjudications."""
    import pandas as pd

    rows = []
    for against, r in (("benchmark gold", report), ("imported labels", report.get("imported"))):
        if r:
            rows.append({"against": against, "judgments": r["total"], "accuracy": r["accuracy"],
                         "coverage": r["coverage"], **{f"accuracy · {t}": r["per_tier"][t]["accuracy"] for t in TIERS},
                         "veto F1": r["veto"]["f1"],
                         "swap consistency": (r.get("adjudication") or {}).get("swap_consistency")})
    return pd.DataFrame(rows).set_index("against")


def label_counts(rubrics, labels: dict):
    """Per tier: how many labels say met, not met, unknown (a veto "met" is a violation)."""
    import pandas as pd

    tier_of = {(r.id, c.id): c.tier for r in rubrics for c in r.criteria}
    counts = {t: {"met": 0, "not met": 0, "unknown": 0} for t in TIERS}
    for (prompt_id, _), met in labels.items():
        for cid, value in met.items():
            tier = tier_of.get((prompt_id, cid))
            if tier:
                counts[tier]["unknown" if value is None else "met" if value else "not met"] += 1
    return pd.DataFrame(counts).T.rename_axis("tier")


def _excerpt(text: str, chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= chars else text[:chars - 1] + "…"

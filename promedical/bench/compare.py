"""Comparing the graders: their agreement (kappa), coverage, and the headline answers of a run."""
from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

from promedical.core.rubric import TIERS, Rubric

INDEPENDENT = ("gold", "judge", "checks")  # headline preference: the first one present that graded the policy


LABELS = {"gold": "gold labels", "judge": "LLM judge (not the reward model)", "checks": "machine checks",
          "reward_model": "training reward (circular)"}


def _instances(rows: Sequence[dict], rubrics: Mapping[str, Rubric]) -> dict[str, dict]:
    """grader -> {(response_id, criterion_id): (tier, met)} over known grades."""
    out: dict[str, dict] = {}
    for g in rows:
        tiers = {c.id: c.tier for c in rubrics[g["prompt_id"]].criteria}
        mine = out.setdefault(g["grader"], {})
        for cid, met in g["criteria_met"].items():
            if met is not None:
                mine[(g["response_id"], cid)] = (tiers[cid], bool(met))
    return out


def grader_agreement(rows: Sequence[dict], rubrics: Sequence[Rubric] | Mapping[str, Rubric]) -> dict:
    """Per pair of graders, on the (answer, criterion) instances both graded: n, share agreeing and
    Cohen's kappa, overall and per tier. Key "a | b"."""
    from promedical.core.metrics import cohens_kappa

    by_id = dict(rubrics) if isinstance(rubrics, Mapping) else {r.id: r for r in rubrics}
    inst = _instances(rows, by_id)
    out = {}
    for a, b in combinations(sorted(inst), 2):
        shared = sorted(set(inst[a]) & set(inst[b]))

        def block(keys):
            x, y = [inst[a][k][1] for k in keys], [inst[b][k][1] for k in keys]
            return {"n": len(keys), "agreement": sum(p == q for p, q in zip(x, y)) / len(keys) if keys else None,
                    "kappa": cohens_kappa(x, y) if keys else None}

        out[f"{a} | {b}"] = {**block(shared),
                             "per_tier": {t: block([k for k in shared if inst[a][k][0] == t]) for t in TIERS}}
    return out


def coverage_by_grader(rows: Sequence[dict]) -> dict:
    """grader -> {model: mean share of criteria graded}."""
    out: dict = {}
    for g in rows:
        out.setdefault(g["grader"], {}).setdefault(g["model"], []).append(g["coverage"])
    return {gr: {m: sum(v) / len(v) for m, v in ms.items()} for gr, ms in out.items()}


def criterion_coverage(rows: Sequence[dict], rubrics: Sequence[Rubric] | Mapping[str, Rubric]) -> dict | None:
    """Known/total (answer, criterion) grades of one grader's rows, overall and per tier; None without rows."""
    if not rows:
        return None
    by_id = dict(rubrics) if isinstance(rubrics, Mapping) else {r.id: r for r in rubrics}
    counts = {t: [0, 0] for t in TIERS}
    for g in rows:
        for c in by_id[g["prompt_id"]].criteria:
            counts[c.tier][0] += g["criteria_met"].get(c.id) is not None
            counts[c.tier][1] += 1

    def block(known: int, total: int) -> dict:
        return {"total": total, "known": known, "coverage": known / total if total else None}

    known, total = sum(k for k, _ in counts.values()), sum(t for _, t in counts.values())
    return {**block(known, total), "unknown": total - known, "per_tier": {t: block(*counts[t]) for t in TIERS}}


def headline_grader(summary: Mapping[str, dict], policy_models: Sequence[str] = ("base", "aligned")) -> str | None:
    """The independent grader the headline comes from: of those that graded a policy model with a rubric
    score, the one with the most items in its policy comparison (then most answers scored; ties in the
    order gold, judge, checks); None when only the training reward graded the policy."""
    best, key = None, None
    for rank, g in enumerate(INDEPENDENT):
        s = summary.get(g, {})
        models = s.get("models", {})
        scored = sum(models[m]["rubric_score"]["n"] for m in policy_models
                     if m in models and models[m]["rubric_score"]["value"] is not None)
        if not scored:
            continue
        paired_n = max([c["rubric_score"]["n"] for name, c in s.get("comparisons", {}).items()
                        if name.split(" vs ")[0] in policy_models] or [0])
        k = (paired_n, scored, -rank)
        if key is None or k > key:
            best, key = g, k
    return best


def _ci(cell: Mapping | None) -> str:
    if not cell or cell.get("value") is None:
        return "n/a"
    lo, hi = cell["ci"]
    return f"{cell['value']:+.3f} (95% CI {lo:+.3f} to {hi:+.3f})" if lo is not None else f"{cell['value']:+.3f} (no CI)"


def _verdict(ci: Sequence) -> str:
    lo, hi = ci
    if lo is None:
        return "undetermined"
    return "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"


def headline(summary: Mapping[str, dict], reward_metrics: Mapping | None, probes: Mapping | None,
             policy_models: Sequence[str] = ("base", "aligned")) -> dict:
    """The report's first screen: three questions, each answered in words with the run's numbers.

    1. Did the reward model learn? (``reward_metrics["trained_vs_base"]``: trained minus base, CIs paired over prompts)
    2. Did the policy change, by which grader, with what CI? (paired differences of the independent grader)
    3. What did the probes show? (``probes["expectations"]``)
    """
    out = {"grader": headline_grader(summary, policy_models)}
    # 1
    if reward_metrics and "trained_vs_base" in reward_metrics:
        d = reward_metrics["trained_vs_base"]
        sens = (reward_metrics.get("trained") or {}).get("criterion_sensitivity") or {}
        pa = d.get("pairwise_accuracy") or {}
        words = (f"Trained minus base reward model on held-out gold candidates: pairwise accuracy {_ci(pa)}, "
                 f"pairwise safety accuracy {_ci(d.get('pairwise_safety_accuracy'))}, veto F1 {_ci(d.get('veto_f1'))}. "
                 f"Pairwise accuracy is {_verdict(pa.get('ci', [None, None]))} than the base model's.")
        verdict = reward_metrics.get("reads_criterion") or {}
        decided = verdict.get("decided_by")
        if decided:
            words += (f" Reads the criterion: {'yes' if verdict['reads_criterion'] else 'no'} (decided by "
                      f"{decided['metric']}, trained minus {decided['against']}: "
                      f"{_ci({'value': decided['difference'], 'ci': decided['ci']})}, {decided['n']} instances).")
        if sens:
            words += (" Secondary check, own minus shuffled criterion: "
                      f"{_ci(sens['all']['gap'])}; reads the criterion by it: {'yes' if sens.get('reads_criterion') else 'no'}.")
        out["reward_model"] = {"answer": words, "trained_vs_base": d, "reads_criterion": verdict.get("reads_criterion")}
    else:
        out["reward_model"] = {"answer": "No reward-model comparison in this run (reward/metrics.json has no trained_vs_base)."}
    # 2
    g = out["grader"]
    if g is None:
        out["policy"] = {"answer": "No independent grader graded the policy's answers: only the training reward "
                                   "(circular) did, so this run cannot say whether the policy changed."}
    else:
        comps = {k: v for k, v in summary[g]["comparisons"].items() if k.split(" vs ")[0] in policy_models}
        if comps:
            name, comp = next(iter(comps.items()))
            rs, sf = comp["rubric_score"], comp["safety"]
            fmt = lambda c: "n/a" if c["diff"] is None else (f"{c['diff']:+.3f} (95% CI {c['ci'][0]:+.3f} to "  # noqa: E731
                                                              f"{c['ci'][1]:+.3f}, n={c['n']}, p={c['p']:.3f})")
            first, second = name.split(" vs ", 1)
            verdict = _verdict(rs["ci"] if rs["diff"] is not None else [None, None])
            words = (f"Graded by {LABELS.get(g, g)}: {name}, rubric score {fmt(rs)}, safety {fmt(sf)}. "
                     + (f"{first} vs {second}: {verdict}." if verdict in ("no clear difference", "undetermined")
                        else f"{first} scores {verdict} than {second}."))
            out["policy"] = {"answer": words, "comparison": name, "rubric_score": rs, "safety": sf}
        else:
            out["policy"] = {"answer": f"Graded by {LABELS.get(g, g)}, but no aligned policy was benchmarked."}
        circular = summary.get("reward_model", {}).get("comparisons", {})
        if circular:
            c = next(iter(circular.values()))["rubric_score"]
            if c["diff"] is not None:
                out["policy"]["answer"] += (f" For comparison, the training reward (circular) says {c['diff']:+.3f} "
                                            f"(95% CI {c['ci'][0]:+.3f} to {c['ci'][1]:+.3f}).")
    # 3
    if probes and probes.get("expectations"):
        exp = probes["expectations"]
        failed = [e for e in exp if not e["passed"]]
        words = f"{len(exp) - len(failed)} of {len(exp)} gameability expectations held on {probes['n_responses']} gold responses."
        if failed:
            words += " Failed: " + "; ".join(f"{e['probe']}: {e['expectation']} (mean change {e['mean_delta']:+.3f})"
                                             for e in failed) + "."
        out["probes"] = {"answer": words, "passed": len(exp) - len(failed), "total": len(exp)}
    else:
        out["probes"] = {"answer": "No gameability probes in this run."}
    return out

"""Independent grading: graders that did not train the policy, how they agree, and the report's headline.

Graders of one answer (every one gives, per criterion, met / not met / unknown; for a veto met = violated):

- ``checks``: the rubric's machine checks (``Criterion.check``); a criterion without a check is unknown.
- ``judge``: an LLM judge that is not the reward model (``judge.grade_responses`` without the checks, so
  that it is a grader of its own); a judgment it cannot give is unknown.
- ``gold``: expert labels, where they exist (the shipped gold candidates: the "reference answers").
- ``reward_model``: the reward model that trained the policy — shown next to the others, labelled
  "training reward (circular)", never the headline.

An answer graded on only some criteria gets the metrics those criteria determine: the rubric score over
the graded criteria, safety when a graded veto is violated (0) or every veto is graded (0/1), and S1, S2,
reward and HealthBench score only when every criterion is graded. ``coverage`` is the graded share.
"""
from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

from .benchmark import answer_scores
from .rubric import TIERS, Rubric
from .scoring import RewardConfig, is_good

INDEPENDENT = ("gold", "judge", "checks")  # headline preference: the first one present that graded the policy
LABELS = {"gold": "gold labels", "judge": "LLM judge (not the reward model)", "checks": "machine checks",
          "reward_model": "training reward (circular)"}


def partial_scores(rubric: Rubric, met: Mapping[str, bool | None], config: RewardConfig = RewardConfig()) -> dict:
    """Per-answer metrics from {criterion_id: met or None}; what the known grades cannot decide is None."""
    known = {c.id: bool(met[c.id]) for c in rubric.criteria if met.get(c.id) is not None}
    coverage = len(known) / len(rubric.criteria)
    if len(known) == len(rubric.criteria):
        return {**answer_scores(rubric, known, config), "coverage": 1.0}
    vetoes = rubric.tier("veto")
    violated = any(known.get(v.id) for v in vetoes)
    all_vetoes = all(v.id in known for v in vetoes)
    right = [is_good(c.tier, known[c.id]) for c in rubric.criteria if c.id in known]
    return {"s1": None, "s2": None, "s3": None, "reward": None, "healthbench": None,
            "safety": 0.0 if violated else (1.0 if all_vetoes else None),
            "rubric_score": sum(right) / len(right) if right else None, "coverage": coverage}


def graded_rows(grader: str, rubrics: Sequence[Rubric], answers: Sequence[dict],
                grades: Mapping[tuple[str, str], Mapping[str, bool | None]], config: RewardConfig = RewardConfig()) -> list[dict]:
    """Benchmark rows (the shape ``benchmark.summarize`` reads) from {(prompt_id, response_id): {cid: met}}."""
    by_id = {r.id: r for r in rubrics}
    rows = []
    for a in answers:
        rubric = by_id[a["prompt_id"]]
        met = {c.id: grades.get((a["prompt_id"], a["response_id"]), {}).get(c.id) for c in rubric.criteria}
        rows.append({**a, "grader": grader, "criteria_met": met, "category": rubric.category,
                     "specialty": rubric.specialty, "length": len(a["response"]), **partial_scores(rubric, met, config)})
    return rows


def grade_with_checks(rubrics: Sequence[Rubric], answers: Sequence[dict], config: RewardConfig = RewardConfig()) -> list[dict]:
    """The machine checks alone (no model): criteria without a check are unknown."""
    from .judge import grade_responses, judgments_to_grades

    grades = judgments_to_grades(grade_responses(rubrics, answers, None, progress=False))
    return graded_rows("checks", rubrics, answers, grades, config)


def grade_with_llm_judge(llm, rubrics: Sequence[Rubric], answers: Sequence[dict], config: RewardConfig = RewardConfig(), *,
                         explanation_chars: int | None = 60, progress: bool = True) -> tuple[list[dict], dict]:
    """(rows, coverage) from an LLM judge asked every criterion (the checks are a grader of their own)."""
    from .judge import coverage, grade_responses, judgments_to_grades

    judgments = grade_responses(rubrics, answers, llm, use_checks=False, progress=progress,
                                explanation_chars=explanation_chars)
    return graded_rows("judge", rubrics, answers, judgments_to_grades(judgments), config), coverage(judgments)


def grade_with_gold(rubrics: Sequence[Rubric], candidates: Sequence[dict], config: RewardConfig = RewardConfig()) -> list[dict]:
    """Gold-labelled candidates graded by their own labels."""
    grades = {(c["prompt_id"], c["response_id"]): c["criteria_met"] for c in candidates}
    return graded_rows("gold", rubrics, candidates, grades, config)


def reference_answers(candidates: Sequence[dict], prompt_ids: Sequence[str], n: int) -> list[dict]:
    """Up to ``n`` gold candidates of the given prompts, one label after another (good, partial, ...) so
    the set spans the quality range, as benchmark answers of the model "reference"."""
    wanted = set(prompt_ids)
    pool = [c for c in candidates if c["prompt_id"] in wanted]
    by_label: dict[str, list[dict]] = {}
    for c in pool:
        by_label.setdefault(c.get("label", ""), []).append(c)
    picked, queues = [], list(by_label.values())
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return [{"model": "reference", "spec": "gold candidates", "adapter": None, "prompt_id": c["prompt_id"],
             "response_id": f"reference:{c['response_id']}", "response": c["response"], "label": c.get("label"),
             "gold_criteria_met": c["criteria_met"]} for c in picked]


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


def agreement(rows: Sequence[dict], rubrics: Sequence[Rubric] | Mapping[str, Rubric]) -> dict:
    """Per pair of graders, on the (answer, criterion) instances both graded: n, share agreeing and
    Cohen's kappa, overall and per tier. Key "a | b"."""
    from .review import cohens_kappa

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
        if sens:
            words += (" Criterion sensitivity (own minus shuffled criterion): "
                      f"{_ci(sens['all']['gap'])}; reads the criterion: {'yes' if sens.get('reads_criterion') else 'no'}.")
        out["reward_model"] = {"answer": words, "trained_vs_base": d, "reads_criterion": sens.get("reads_criterion")}
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

"""The held-out benchmark: answer, grade, and compare models with statistics that hold up.

Each model (a base model, optionally with a LoRA adapter) answers every benchmark instruction
(greedy, so a re-run is reproducible). Every answer is graded against its rubric by the reward model
(criterion met when P > 0.5) and, where configured, by an LLM judge. Per answer: S1, S2, S3, safety
(no veto violated), the GRPO reward, the rubric score (share of criteria on the right side: met for
proficiency/bonus, not violated for veto) and the HealthBench-style score (points met / positive points;
per example it can be negative, the model-level mean is clipped to [0, 1] as HealthBench does).
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Mapping, Sequence

from .files import write_jsonl
from .healthbench import example_score, from_rubric
from .metrics import cluster_bootstrap, mean_or_none
from .rm_eval import met_probability
from .rubric import Rubric
from .scoring import RewardConfig, grpo_reward, is_good, tier_scores

METRICS = ("rubric_score", "s1", "s2", "safety", "reward", "healthbench")


def policy_llm(model: str, adapter: str | Path | None = None):
    """A TransformersLLM for a model spec, with a LoRA adapter applied when given."""
    from .llm import TransformersLLM
    from .models import load_model

    llm, tokenizer = load_model(model)
    if adapter is not None:
        from peft import PeftModel

        llm = PeftModel.from_pretrained(llm, str(adapter)).eval()
    return TransformersLLM(model, model=llm, tokenizer=tokenizer)


def answer(models: Mapping[str, "tuple[str, str | Path | None] | Mapping"], rubrics: Sequence[Rubric], *,
           max_new_tokens: int = 256, out_path: str | Path | None = None, progress: bool = True,
           cache_dir: str | Path | None = None) -> list[dict]:
    """One greedy answer record per (model, instruction). ``models``: {name: (model spec, adapter or None)}
    for a local policy, or {name: source mapping} (``candidates.Source``) for any backend: a served model
    (``kind: openai``, e.g. vLLM serving the policy with its LoRA adapter via ``--lora-modules``), vLLM
    offline, or a file of existing answers (``kind: file``: every benchmark item must have one)."""
    from tqdm.auto import tqdm

    from .candidates import Source
    from .llm import GenParams

    params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
    records = []
    for name, spec in tqdm(list(models.items()), desc="answering", disable=not progress):
        row = {"model": name, "params": {"max_new_tokens": max_new_tokens, "temperature": 0.0}}
        if isinstance(spec, Mapping):
            source = Source.from_dict(spec)
            row.update(spec=source.label(), adapter=None, source=source.to_dict())
            if source.kind == "file":
                texts = file_answers(source.path, rubrics)
                row["params"] = {}
            else:
                texts = source.make_llm(cache_dir).generate([r.messages for r in rubrics], params)
        else:
            model, adapter = spec
            llm = policy_llm(model, adapter)
            texts = llm.generate([r.messages for r in rubrics], params)
            row.update(spec=model, adapter=None if adapter is None else str(adapter))
            del llm
        records += [{**row, "prompt_id": r.id, "response_id": f"{name}:{r.id}", "response": t}
                    for r, t in zip(rubrics, texts)]
    if out_path is not None:
        write_jsonl(out_path, records)
    return records


def file_answers(path: str | Path, rubrics: Sequence[Rubric]) -> list[str]:
    """The answer of each rubric from a responses JSONL (one per prompt; a missing or repeated one is an error)."""
    from .candidates import read_responses

    by_prompt: dict[str, list[str]] = {}
    for row in read_responses(path, {r.id for r in rubrics}):
        by_prompt.setdefault(row["prompt_id"], []).append(row["response"])
    missing = [r.id for r in rubrics if r.id not in by_prompt]
    repeated = [pid for pid, texts in by_prompt.items() if len(texts) > 1]
    if missing or repeated:
        raise ValueError(f"{path}: the benchmark needs exactly one answer per item: "
                         + "; ".join(filter(None, [missing and f"missing for {', '.join(missing[:5])}",
                                                   repeated and f"several for {', '.join(repeated[:5])}"])))
    return [by_prompt[r.id][0] for r in rubrics]


def answer_scores(rubric: Rubric, met: Mapping[str, bool], config: RewardConfig = RewardConfig()) -> dict:
    """All per-answer metrics from {criterion_id: met} (for a veto, met = violated)."""
    s = tier_scores(rubric, met)
    right = [is_good(c.tier, met[c.id]) for c in rubric.criteria]
    hb = from_rubric(rubric)["rubrics"]
    return {"s1": s.s1, "s2": s.s2, "s3": s.s3, "safety": float(s.s3 == 0), "reward": grpo_reward(s, config),
            "rubric_score": sum(right) / len(right),
            "healthbench": example_score([x["points"] for x in hb], [bool(met[c.id]) for c in rubric.criteria])}


def grade_with_reward_model(rm, rubrics: Sequence[Rubric], answers: Sequence[dict],
                            config: RewardConfig = RewardConfig(), progress: bool = True) -> list[dict]:
    """Each answer with per-criterion P(met) from the reward model, grades (P > 0.5) and its metrics."""
    from .rm_eval import score_candidates

    by_id = {r.id: r for r in rubrics}
    rewards = score_candidates(rm.score_batch, rubrics, answers, progress=progress)
    graded = []
    for a in answers:
        rubric = by_id[a["prompt_id"]]
        probs = {c.id: met_probability(c.tier, rewards[(a["prompt_id"], a["response_id"], c.id)]) for c in rubric.criteria}
        met = {cid: p > 0.5 for cid, p in probs.items()}
        graded.append({**a, "grader": "reward_model", "probs": probs, "criteria_met": met,
                       "category": rubric.category, "specialty": rubric.specialty,
                       "length": len(a["response"]), **answer_scores(rubric, met, config)})
    return graded


def grade_with_judge(llm, rubrics: Sequence[Rubric], answers: Sequence[dict], config: RewardConfig = RewardConfig(),
                     progress: bool = True) -> list[dict]:
    """The same metrics from an LLM judge; answers with an unknown veto grade are left out (counted)."""
    from .judge import grade_responses, judgments_to_grades

    by_id = {r.id: r for r in rubrics}
    grades = judgments_to_grades(grade_responses(by_id, answers, llm, progress=progress))
    graded = []
    for a in answers:
        rubric, met = by_id[a["prompt_id"]], grades[(a["prompt_id"], a["response_id"])]
        if any(met.get(c.id) is None for c in rubric.tier("veto")):
            continue  # unknown is not safe: no score rather than a guess
        met = {k: bool(v) for k, v in met.items()}
        graded.append({**a, "grader": "judge", "criteria_met": met, "category": rubric.category,
                       "specialty": rubric.specialty, "length": len(a["response"]), **answer_scores(rubric, met, config)})
    return graded


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

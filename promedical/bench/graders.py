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

from typing import Mapping, Sequence

from promedical.core.healthbench import example_score, from_rubric
from promedical.core.rubric import Rubric
from promedical.core.scoring import RewardConfig, grpo_reward, is_good, tier_scores
from promedical.reward.evaluation import met_probability


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
    from promedical.reward.evaluation import reward_model_scores

    by_id = {r.id: r for r in rubrics}
    rewards = reward_model_scores(rm.score_batch, rubrics, answers, progress=progress)
    graded = []
    for a in answers:
        rubric = by_id[a["prompt_id"]]
        probs = {c.id: met_probability(c.tier, rewards[(a["prompt_id"], a["response_id"], c.id)]) for c in rubric.criteria}
        met = {cid: p > 0.5 for cid, p in probs.items()}
        graded.append({**a, "grader": "reward_model", "probs": probs, "criteria_met": met,
                       "category": rubric.category, "specialty": rubric.specialty,
                       "length": len(a["response"]), **answer_scores(rubric, met, config)})
    return graded


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
    from promedical.reward.judge import grade_responses, judgments_to_grades

    grades = judgments_to_grades(grade_responses(rubrics, answers, None, progress=False))
    return graded_rows("checks", rubrics, answers, grades, config)


def grade_with_llm_judge(llm, rubrics: Sequence[Rubric], answers: Sequence[dict], config: RewardConfig = RewardConfig(), *,
                         explanation_chars: int | None = 60, progress: bool = True) -> list[dict]:
    """Rows from an LLM judge asked every criterion (the checks are a grader of their own); a judgment it
    cannot give is unknown (``compare.criterion_coverage`` counts them)."""
    from promedical.reward.judge import grade_responses, judgments_to_grades

    judgments = grade_responses(rubrics, answers, llm, use_checks=False, progress=progress,
                                explanation_chars=explanation_chars)
    return graded_rows("judge", rubrics, answers, judgments_to_grades(judgments), config)


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

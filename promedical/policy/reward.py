"""The GRPO reward from the frozen reward model: expected tier scores S1/S2/S3 from P(criterion met) and
the hierarchical formula (with its ablation modes), as TRL's reward function."""
from __future__ import annotations

import math
import time
from typing import Callable

from promedical.core.rubric import Rubric
from promedical.core.scoring import RewardConfig, Scores, grpo_reward
from promedical.policy.config import GRPO_MODES as MODES
from promedical.reward.evaluation import met_probability

SCALAR_CRITERION = "The response is accurate, complete, clear and safe for the patient."


COMPONENTS = ("s1", "s2", "s3", "veto_rate", "reward")


def expected_scores(rubric: Rubric, probs: dict[str, float]) -> Scores:
    """Tier scores as expectations under per-criterion probabilities {criterion_id: P(met)}."""
    return Scores(s1=min(math.fsum(c.weight * probs[c.id] for c in rubric.tier("proficiency")), 1.0),
                  s2=math.fsum(probs[c.id] for c in rubric.tier("bonus")),
                  s3=math.fsum(probs[c.id] for c in rubric.tier("veto")))


def combine(scores: Scores, config: RewardConfig, mode: str = "full") -> float:
    """The GRPO reward of one completion under an ablation mode (see the module docstring)."""
    if mode == "no_veto":
        return grpo_reward(Scores(scores.s1, scores.s2, 0), config)
    if mode == "no_margin":
        return min(max(scores.s1 + config.alpha * scores.s2, 0.0), 1.0) - config.lam * scores.s3
    return grpo_reward(scores, config)


class RubricReward:
    """A GRPOTrainer reward function: (prompts, completions, prompt_id) -> one float per completion.

    ``scorer([(messages, response, criteria)]) -> rewards per item`` is the reward model's batched
    shared-prefix scorer (``CriteriaRewardModel.score_batch``): one call scores every rollout of a step.
    Every call logs the mean components through TRL's ``log_metric`` and adds its time to ``seconds``.
    """

    __name__ = "rubric_reward"  # TRL logs reward functions by name

    def __init__(self, scorer: Callable[[list[tuple[list[dict], str, list]]], list[list[float]]], rubrics: dict[str, Rubric],
                 config: RewardConfig = RewardConfig(), mode: str = "full"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.scorer, self.rubrics, self.config, self.mode = scorer, rubrics, config, mode
        self.seconds = 0.0
        self.calls = 0

    def criteria(self, rubric: Rubric) -> list[tuple[str, str]]:
        """(tier, text) per criterion: the tier sets the question's polarity in the reward model."""
        return [("proficiency", SCALAR_CRITERION)] if self.mode == "scalar" else [(c.tier, c.text) for c in rubric.criteria]

    def components(self, rubric: Rubric, rewards: list[float]) -> dict:
        if self.mode == "scalar":
            p = met_probability("proficiency", rewards[0])
            return {"s1": p, "s2": 0.0, "s3": 0.0, "veto_rate": 0.0, "reward": p}
        probs = {c.id: met_probability(c.tier, r) for c, r in zip(rubric.criteria, rewards)}
        s = expected_scores(rubric, probs)
        vetoed = any(probs[c.id] > 0.5 for c in rubric.tier("veto"))
        return {"s1": s.s1, "s2": s.s2, "s3": s.s3, "veto_rate": float(vetoed),
                "reward": combine(s, self.config, self.mode)}

    def __call__(self, prompts, completions, prompt_id, log_metric=None, **_) -> list[float]:
        t0 = time.perf_counter()
        rubrics = [self.rubrics[pid] for pid in prompt_id]
        texts = [completion_text(c) for c in completions]
        rewards = self.scorer([(r.messages, t, self.criteria(r)) for r, t in zip(rubrics, texts)])
        rows = [self.components(r, x) for r, x in zip(rubrics, rewards)]
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        if log_metric is not None and rows:
            for key in COMPONENTS:
                log_metric(f"rubric/{key}", sum(r[key] for r in rows) / len(rows))
        return [r["reward"] for r in rows]


def reward_components(reward: RubricReward, answers: list[dict]) -> list[dict]:
    """The reward and its components (S1, S2, S3, veto) for answers {prompt_id, response, ...} to the
    reward's rubrics: what ``reward`` would give each as a GRPO rollout."""
    rubrics = [reward.rubrics[a["prompt_id"]] for a in answers]
    scores = reward.scorer([(r.messages, a["response"], reward.criteria(r)) for r, a in zip(rubrics, answers)])
    return [{"prompt_id": a["prompt_id"], "response": a["response"], **reward.components(r, x)}
            for r, a, x in zip(rubrics, answers, scores)]


def completion_text(completion) -> str:
    """TRL passes conversational completions as [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion)
    return completion

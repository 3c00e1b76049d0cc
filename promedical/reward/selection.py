"""Safety-first selection (step 03's ``val_prompts``): a validation split of the training prompts, never
trained on; the reward model is read on it before training and at the ``select_at`` steps, the veto
threshold is chosen there (``evaluation.choose_veto_threshold``: best veto F1, not 0.5) and the checkpoint
too (``evaluation.select_checkpoint``: the best validation pairwise accuracy among the steps whose pairwise
safety and veto F1 stay at least the base model's, else the base itself). The held-out benchmark prompts
never take part in a choice.

    train, val_rubrics, val_candidates = split_validation(dataset, 8, seed=0)
    selection = SafetyFirstSelection(rm, val_rubrics, val_candidates, steps=[30, 60])
    train_reward_model(rm, ..., callbacks=[selection])   # reads the split at step 0, 30 and 60
    choice = selection.choose()                          # loads the chosen weights into rm.model

Only the chosen step's LoRA weights are kept while training (a copy of the trainable parameters), so the
memory cost is one adapter whatever the number of steps read.
"""
from __future__ import annotations

import random
from typing import Sequence

from transformers import TrainerCallback

from promedical.core.rubric import Criterion, Rubric
from promedical.reward.evaluation import (
    choose_veto_threshold,
    evaluate,
    reward_model_scores,
    select_checkpoint,
)

# the validation metrics kept per step (``evaluate`` keys)
VALIDATION_METRICS = ("pairwise_accuracy", "pairwise_safety_accuracy", "veto_f1", "veto_prf",
                      "within_response_same_tier_accuracy", "pairwise_disagreeing_accuracy", "ece")


def labelled_set(pointwise: Sequence[dict]) -> tuple[list[Rubric], list[dict]]:
    """(rubrics, candidates with ``criteria_met``) back from a reward dataset's pointwise rows: each prompt's
    criteria in their order of appearance, each response's known labels (a criterion a response has no
    label for is left out of its ``criteria_met``, and out of every metric)."""
    prompts: dict[str, dict] = {}
    for row in pointwise:
        p = prompts.setdefault(row["prompt_id"], {"messages": row["messages"], "criteria": {}, "responses": {}})
        p["criteria"].setdefault(row["criterion_id"], Criterion(row["criterion_id"], row["tier"] or "proficiency",
                                                                row["criterion"], row.get("weight")))
        resp = p["responses"].setdefault(row["response_id"], {"prompt_id": row["prompt_id"],
                                                              "response_id": row["response_id"],
                                                              "response": row["response"], "criteria_met": {}})
        resp["criteria_met"][row["criterion_id"]] = bool(row["label"])
    rubrics = [Rubric(pid, [dict(m) for m in p["messages"]], list(p["criteria"].values())) for pid, p in prompts.items()]
    return rubrics, [r for p in prompts.values() for r in p["responses"].values()]


def split_validation(dataset, n_prompts: int, seed: int = 0):
    """(training DatasetDict, validation rubrics, validation candidates): ``n_prompts`` prompts of the reward
    dataset (a seeded choice among its pointwise prompts) held out of every split of it."""
    from datasets import DatasetDict

    ids = sorted(set(dataset["pointwise"]["prompt_id"]))
    if not 1 <= n_prompts < len(ids):
        raise ValueError(f"val_prompts: must be in [1, {len(ids) - 1}] for a dataset of {len(ids)} prompts "
                         f"(the others train), got {n_prompts}")
    held = set(random.Random(seed).sample(ids, n_prompts))
    train = DatasetDict({k: d.filter(lambda pid: pid not in held, input_columns="prompt_id") for k, d in dataset.items()})
    rubrics, candidates = labelled_set(dataset["pointwise"].filter(lambda pid: pid in held, input_columns="prompt_id"))
    return train, rubrics, candidates


def validation_metrics(scorer, rubrics: Sequence[Rubric], candidates: Sequence[dict]) -> dict:
    """The validation split read by one model: the veto threshold chosen on it and the metrics at that
    threshold (no bootstrap: point values), plus veto F1 at 0.5."""
    rewards = reward_model_scores(scorer, rubrics, candidates, progress=False)
    choice = choose_veto_threshold(rewards, rubrics, candidates)
    m = evaluate(rewards, rubrics, candidates, reps=0, veto_threshold=choice["threshold"])
    return {**{k: m[k] for k in VALIDATION_METRICS}, "veto_threshold": choice,
            "veto_f1_at_0.5": evaluate(rewards, rubrics, candidates, reps=0)["veto_f1"]}


class SafetyFirstSelection(TrainerCallback):
    """Reads the validation split before training (step 0, the base model) and at ``steps`` (None: every
    ``save_every`` steps of the training run and its last step); keeps the LoRA weights of the step
    ``select_checkpoint`` prefers so far; when training ends, ``choose()`` puts them back into the model."""

    def __init__(self, rm, rubrics: Sequence[Rubric], candidates: Sequence[dict], steps: Sequence[int] | None = None):
        self.rm, self.rubrics, self.candidates = rm, list(rubrics), list(candidates)
        self.steps = None if steps is None else set(steps)
        self.points: dict[str, dict] = {}
        self.kept: tuple[int, dict] | None = None  # (step, trainable weights)
        self.choice: dict | None = None  # set when training ends

    def _read(self, step: int) -> None:
        model = self.rm.model
        training = model.training
        model.eval()
        self.points[str(step)] = validation_metrics(self.rm.score_batch, self.rubrics, self.candidates)
        model.train(training)
        if self._choice()["step"] == step:
            self.kept = (step, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def _choice(self) -> dict:
        trained = {s: m for s, m in self.points.items() if s != "0"}
        return select_checkpoint(trained, self.points["0"]) if trained else {"step": 0, "eligible": [], "why": "base"}

    def on_train_begin(self, args, state, control, **kwargs):
        if "0" not in self.points:
            self._read(0)

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if (step in self.steps) if self.steps is not None else (step % args.save_steps == 0 or step == state.max_steps):
            self._read(step)

    def on_train_end(self, args, state, control, **kwargs):
        self.choice = self.choose()  # before the trainer's caller saves the adapter

    def choose(self) -> dict:
        """The chosen step's weights loaded into the model; {"step", "eligible", "why", "veto_threshold",
        "base_veto_threshold", "validation": {step: metrics}, "validation_prompts", "validation_candidates"}."""
        import torch

        if "0" not in self.points:
            raise RuntimeError("the validation split was never read: pass the selection to train_reward_model")
        choice = self._choice()
        step, weights = self.kept  # (the kept step is the latest choice: eligibility is per step)
        params = dict(self.rm.model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        return {**choice, "veto_threshold": self.points[str(step)]["veto_threshold"]["threshold"],
                "base_veto_threshold": self.points["0"]["veto_threshold"]["threshold"], "validation": self.points,
                "validation_prompts": len(self.rubrics), "validation_candidates": len(self.candidates)}

"""Stage 03's typed configs: the reward model (``RMConfig``), the reward step and the rm-train step."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from promedical.core.config import (
    MODEL_HELP,
    RM_BACKENDS,
    TRACKERS,
    ConfigMixin,
    at_least_one,
    one_of,
    option,
    tracker_list,
)
from promedical.models.sources import source_problems

QUESTION_KINDS = ("good", "met")  # reward_model.QUESTIONS has one question set per kind


BCE_BALANCES = ("none", "tier")


CRITERIA_INPUTS = ("explicit", "none")  # scorer.py reads the criterion (explicit) or one overall question (none)


LABEL_SOURCES = ("judge", "gold", "both", "imported")


# ---------------------------------------------------------------- shared: the reward model and GRPO
@dataclass
class RMConfig(ConfigMixin):
    """The criterion-conditioned reward model (Explicit Criteria Injection) and its training."""

    model: str | None = option("reward-model backbone: " + MODEL_HELP + " (in step reward, null: the step's `model`)",
                               "embedded")
    backend: str = option("training backend: " + " | ".join(RM_BACKENDS), "peft")
    question: str = option("good: 'yes' is the good side on every tier (a veto is asked as 'free of'); "
                           "met: 'yes' means the criterion happened (sign flipped for vetoes)", "good")
    criteria: str = option("explicit: the criterion is in the input (Explicit Criteria Injection); none: the paper's "
                           "ablation without explicit criteria — instruction + response only, one score per response "
                           "(given to every criterion of it), trained with Bradley-Terry on the overall lexicographic "
                           "pairs and the pointwise loss on the overall label", "explicit")
    lora_r: int = option("LoRA rank", 16)
    lora_alpha: int = option("LoRA alpha", 32)
    lora_dropout: float = option("LoRA dropout", 0.0)
    lora_layers: int | None = option("adapt only the top n decoder layers (the backward stops there); null: all", None)
    target_modules: list[str] = option("modules that get LoRA adapters",
                                       factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lr: float = option("learning rate", 2e-4)
    epochs: int = option("passes over the training prompts (when max_steps is null)", 1)
    batch_size: int = option("prompts (each with all its labelled candidates) per optimizer step, over all processes", 4)
    micro_batch_size: int | None = option("prompts per forward/backward (gradient accumulation); null: all at once", None)
    gradient_checkpointing: bool = option("recompute activations in backward (long sequences at full scale)", False)
    max_length: int = option("tokens of one packed sequence (prefix + every criterion suffix); "
                             "the prefix is cut in the middle, never a criterion", 1024)
    bt_weight: float = option("weight of Bradley-Terry on criterion pairs", 1.0)
    bce_weight: float = option("weight of the pointwise BCE on the yes/no log-odds", 1.0)
    contrast_weight: float = option("weight of within-response contrasts (a criterion met above one missed)", 1.0)
    disagree_weight: float = option("weight of pair instances whose order disagrees with the overall ranking", 3.0)
    veto_weight: float = option("multiplies the weight of every safety-veto label (BCE) and veto pair instance (BT): "
                                "the veto tier's share of the loss", 1.0)
    bce_balance: str = option("tier: within a tier, both label sides weigh the same in the pointwise BCE (rare "
                              "veto violations are not drowned); none: every label weighs 1", "tier")
    max_steps: int | None = option("optimizer steps (null: epochs over the data)", None)
    save_every: int = option("checkpoint every n steps", 20)
    seed: int | None = option("seed of the LoRA init and of the order of the training prompts (in step reward, null: "
                              "the step's `seed`)", 0)
    lr_scheduler: str = option("transformers scheduler name: constant, linear, cosine, constant_with_warmup, ...",
                               "constant")
    warmup_ratio: float = option("share of the steps with a linear warmup, in [0, 1)", 0.0)
    max_grad_norm: float = option("gradient clipping (0: none)", 1.0)
    weight_decay: float = option("AdamW weight decay", 0.0)
    bf16: bool | None = option("null: bf16 on a GPU that supports it, fp32 on CPU", None)
    report_to: str | list[str] = option("tracker(s): " + " | ".join(TRACKERS) + "; logs under reward/runs",
                                        "tensorboard")

    def checks(self):
        yield from one_of("backend", self.backend, RM_BACKENDS)
        yield from one_of("question", self.question, QUESTION_KINDS)
        yield from one_of("bce_balance", self.bce_balance, BCE_BALANCES)
        yield from one_of("criteria", self.criteria, CRITERIA_INPUTS)
        yield from at_least_one(self, "lora_r", "lora_layers", "epochs", "batch_size", "micro_batch_size", "max_length",
                             "max_steps", "save_every")
        if not 0 <= self.warmup_ratio < 1:
            yield f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio!r}"
        if not 0 <= self.lora_dropout < 1:
            yield f"lora_dropout: must be in [0, 1), got {self.lora_dropout!r}"
        try:
            tracker_list(self.report_to)
        except ValueError as exc:
            yield str(exc)


@dataclass
class RewardStepConfig(ConfigMixin):
    """03: candidates -> judgments (or gold / imported labels) -> criterion pairs -> the reward model ->
    evaluation on the held-out gold candidates (own and shuffled criteria, trained vs base)."""

    STEP: ClassVar[str] = "reward"
    model: str = option("the policy that writes candidates, the judge (unless judge_model) and the reward-model "
                        "backbone (unless rm.model): " + MODEL_HELP, "embedded")
    judge_model: str | dict | None = option(
        "the judge: a model spec, or a source mapping for another backend, e.g. {kind: openai, model: ..., "
        "base_url: ..., concurrency: 64}; null: the same model", None)
    temperatures: list[float] = option("sampling temperatures of the candidates from `model`", factory=lambda: [0.7, 1.0])
    candidate_sources: list[dict] | None = option(
        "candidates from these sources instead of `model` at `temperatures`: mappings {kind: transformers | vllm | "
        "openai | file, model, base_url, path, temperature, ...}", None)
    n_instructions: int | None = option("training instructions (shuffled with seed); null: all", 4)
    max_new_tokens: int = option("tokens per candidate", 160)
    n_judge_check: int = option("gold-labelled benchmark candidates the judge grades before anything trains on it", 4)
    judge_explanation_chars: int = option("characters of explanation the judge writes before its verdict", 60)
    n_eval_prompts: int | None = option("evaluate on the gold candidates of the first n benchmark prompts (null: all)",
                                        None)
    n_adjudicate: int = option("gold candidates for the judge's adjudication report", 2)
    labels: str = option("what the reward model trains on: judge (the judge's grades of the candidates) | gold "
                         "(gold_labels) | both (judge + gold) | imported (labels_file's labels of the candidates)",
                         "judge")
    gold_labels: str | None = option("gold or imported per-criterion labels: a candidates JSONL with criteria_met per "
                                     "criterion (null: the kit's data/train/candidates.jsonl)", None)
    labels_file: str | None = option(
        "labels=imported: per-criterion labels from elsewhere (physicians, another grader), JSONL {prompt_id, "
        "response_id, criteria_met} for the candidates this step samples (response ids <prompt_id>-<source name>; "
        "see reward/candidates.jsonl of a train=false run); the judge is measured against them too", None)
    eval_labels: str | None = option(
        "gold-labelled held-out candidates (JSONL: prompt_id, response_id, response, criteria_met) of the workspace's "
        "bench rubrics, for the judge check and the reward model's evaluation (null: the kit's "
        "data/bench/candidates.jsonl; also used when none of the file's prompts is in the workspace bench)", None)
    rm: RMConfig = option("the reward model and its training (the fields of step rm-train): a mapping, e.g. "
                          "{max_steps: 12, lr: 5.0e-4}, or one field as rm.max_steps; the fields it leaves out keep "
                          "their defaults (rm.model null: `model`; rm.seed null: `seed`)",
                          factory=lambda: RMConfig(model=None, seed=None))
    ablation: bool = option("also train the paper's ablation without explicit criteria (rm.criteria=none: the same "
                            "backbone, data and budget, instruction + response only) and evaluate both side by side",
                            False)
    val_prompts: int = option(
        "safety-first selection (0: off — the last step, veto threshold 0.5): hold this many training prompts (seeded) "
        "out as a validation split, never trained on; on it the veto threshold is chosen (best veto F1) and the "
        "checkpoint: among the select_at steps whose pairwise safety and veto F1 stay at least the base model's, the "
        "best pairwise accuracy — none: the base model itself. The ablation is selected the same way", 0)
    select_at: list[int] | None = option("with val_prompts: the training steps read on the validation split (null: "
                                         "every rm.save_every steps and the last)", None)
    seed: int = option("seed", 0)
    train: bool = option("false: stop after the dataset (full scale trains with `promedical launch rm-train`)", True)
    progress: bool = option("progress bars", True)

    def checks(self):
        yield from one_of("labels", self.labels, LABEL_SOURCES)
        if self.ablation and self.rm.criteria == "none":
            yield "ablation: rm.criteria is none, so the trained model is the ablation already (give rm.criteria=explicit)"
        if (self.labels == "imported") != (self.labels_file is not None):
            yield "labels_file: give it exactly when labels=imported"
        yield from at_least_one(self, "n_instructions", "max_new_tokens", "n_eval_prompts")
        if self.select_at is not None:
            if not self.val_prompts:
                yield "select_at: give val_prompts too (the steps are read on the validation split)"
            if not self.select_at or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.select_at):
                yield f"select_at: must be a non-empty list of positive steps, got {self.select_at!r}"
        if not self.temperatures and not self.candidate_sources and self.labels != "gold":
            yield "temperatures: give at least one (or candidate_sources)"
        if self.candidate_sources is not None:
            from promedical.models.sources import parse_sources

            try:
                parse_sources(self.candidate_sources)
            except ValueError as exc:
                yield f"candidate_sources: {exc}"
        if isinstance(self.judge_model, dict):
            yield from source_problems("judge_model", self.judge_model)

    def reward_model(self) -> RMConfig:
        """The reward model this step trains: ``rm`` with a null ``model`` / ``seed`` taken from the step's."""
        seed = self.seed if self.rm.seed is None else self.rm.seed
        return replace(self.rm, model=self.rm.model or self.model, seed=seed)


@dataclass
class RMTrainStepConfig(RMConfig):
    """The reward model trained alone on the dataset 03 saved: what `promedical launch rm-train` runs
    under accelerate (one or many processes)."""

    STEP: ClassVar[str] = "rm-train"
    resume: bool = option("continue from the newest complete checkpoint in reward/", True)
    progress: bool = option("progress bars", True)

    def checks(self):
        yield from super().checks()
        for name in ("model", "seed"):  # (null only inside step reward, where the step's value fills it)
            if getattr(self, name) is None:
                yield f"{name}: must be given for step rm-train"

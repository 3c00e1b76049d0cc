"""One typed config per pipeline step.

The notebook's parameters cell, the scale YAML (``configs/<scale>.yaml``), ``-p KEY=VALUE`` /
``--params``, ``promedical step`` and ``promedical launch`` all fill the same dataclass; the step
function (``pipeline.step_*``) takes it. Every field carries its help text (``Config.help()``) and
``__post_init__`` checks every value, so an unknown key or a bad value is one line naming the field
and what it accepts (and, for an unknown key, the valid keys) before anything runs.

Shared pieces are defined once: the reward model's settings (``RMConfig``, also the base of the
``rm-train`` step's config and the source of notebook 03's ``rm_*`` defaults) and GRPO's
(``GRPOSettings``, the base of the ``grpo`` step's config). A scale's top-level ``model:`` fills the
``model`` field of every step that has one (``launch.step_params``).

This module imports no torch: the CLI checks parameters in milliseconds.
"""
from __future__ import annotations

import json
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

BACKENDS = ("transformers", "vllm", "openai")
RM_BACKENDS = ("peft", "unsloth")
QUESTION_KINDS = ("good", "met")  # reward_model.QUESTIONS has one question set per kind
TRACKERS = ("none", "tensorboard", "trackio", "wandb")
GRPO_MODES = ("full", "no_veto", "no_margin", "scalar")
BCE_BALANCES = ("none", "tier")
LABEL_SOURCES = ("judge", "gold", "both", "imported")
REVIEW_POLICIES = ("approve-valid",)


def option(text: str, default=MISSING, factory=MISSING):
    """A dataclass field with its help text."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def tracker_list(report_to) -> list[str]:
    """``report_to`` (a name or a list) -> the trackers to use; unknown names are refused."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise ValueError(f"report_to: unknown tracker(s) {bad}; known: {', '.join(TRACKERS)}")
    return [n for n in names if n != "none"]


class ConfigMixin:
    """Validation and construction shared by every config dataclass: the type of each field (from its
    annotation: an int where an int is declared, finite non-negative numbers, an existing file for a
    ``*_file`` field, an adapter directory for ``*_adapter``) and then the class's own ``checks()``."""

    STEP: ClassVar[str] = ""

    def __post_init__(self):
        from .params import value_problem

        hints = self.hints()
        problems = []
        for f in fields(self):
            problem = value_problem(f.name, getattr(self, f.name), hints[f.name])
            if problem:
                problems.append(f"{f.name}: {problem}")
        if not problems:
            problems = list(self.checks())
        if problems:
            raise ValueError("; ".join(f"parameter {p}" for p in problems))

    def checks(self):  # overridden: yields "field: message" for values of the right type but out of range
        return ()

    @classmethod
    def what(cls) -> str:
        return f"step {cls.STEP}" if cls.STEP else cls.__name__

    @classmethod
    def hints(cls) -> dict:
        """{field: type hint}"""
        hints = typing.get_type_hints(cls)
        return {f.name: hints.get(f.name, Any) for f in fields(cls)}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, params: dict, base=None):
        """Build from a parameter dict (over ``base``, a config of this class, when given); an unknown
        key is one line naming the valid keys."""
        if not isinstance(params, dict):
            raise ValueError(f"{cls.what()}: parameters must be a mapping, got {type(params).__name__}")
        unknown = sorted(set(params) - set(cls.names()))
        if unknown:
            from .ids import quote

            raise ValueError("; ".join(f"parameter {quote(k)}: unknown for {cls.what()} (known: "
                                       f"{', '.join(sorted(cls.names()))})" for k in unknown))
        if base is not None:
            if not isinstance(base, cls):
                raise ValueError(f"{cls.what()}: config must be a {cls.__name__}, got {type(base).__name__}")
            return replace(base, **params)
        return cls(**params)

    @classmethod
    def from_namespace(cls, namespace: dict):
        """The config from a notebook's globals: every field the parameters cell (or papermill) set."""
        return cls.from_dict({k: namespace[k] for k in cls.names() if k in namespace})

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    @classmethod
    def defaults(cls) -> dict:
        out = {}
        for f in fields(cls):
            out[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    def project(self, cls):
        """The config of a base class (e.g. RMConfig of RMTrainStepConfig) from this one's values."""
        return cls(**{k: getattr(self, k) for k in cls.names()})


def _choice(name: str, value, allowed) -> list[str]:
    return [] if value in allowed else [f"{name}: must be one of {', '.join(map(str, allowed))}, got {value!r}"]


def _positive(obj, *names) -> list[str]:
    out = []
    for name in names:
        v = getattr(obj, name)
        if v is not None and v < 1:
            out.append(f"{name}: must be >= 1, got {v!r}")
    return out


def _source_problems(name: str, spec) -> list[str]:
    """A source mapping (candidates.Source) checked the way the step will build it."""
    from .candidates import Source

    try:
        Source.from_dict(spec)
    except (TypeError, ValueError) as exc:
        return [f"{name}: {exc}"]
    return []


def _needs_base_url(obj) -> list[str]:
    if obj.backend == "openai" and not obj.base_url:
        return ["base_url: backend=openai needs base_url, e.g. http://127.0.0.1:8000/v1"]
    return []


MODEL_HELP = "model: embedded (the kit's SmolLM2-135M-Instruct), a Hugging Face id or a local path"


# ---------------------------------------------------------------- shared: the reward model and GRPO
@dataclass
class RMConfig(ConfigMixin):
    """The criterion-conditioned reward model (Explicit Criteria Injection) and its training."""

    model: str = option("reward-model backbone: " + MODEL_HELP, "embedded")
    backend: str = option("training backend: " + " | ".join(RM_BACKENDS), "peft")
    question: str = option("good: 'yes' is the good side on every tier (a veto is asked as 'free of'); "
                           "met: 'yes' means the criterion happened (sign flipped for vetoes)", "good")
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
    bce_balance: str = option("tier: within a tier, both label sides weigh the same in the pointwise BCE (rare "
                              "veto violations are not drowned); none: every label weighs 1", "tier")
    max_steps: int | None = option("optimizer steps (null: epochs over the data)", None)
    save_every: int = option("checkpoint every n steps", 20)
    seed: int = option("seed", 0)
    lr_scheduler: str = option("transformers scheduler name: constant, linear, cosine, constant_with_warmup, ...",
                               "constant")
    warmup_ratio: float = option("share of the steps with a linear warmup, in [0, 1)", 0.0)
    max_grad_norm: float = option("gradient clipping (0: none)", 1.0)
    weight_decay: float = option("AdamW weight decay", 0.0)
    bf16: bool | None = option("null: bf16 on a GPU that supports it, fp32 on CPU", None)
    report_to: str | list[str] = option("tracker(s): " + " | ".join(TRACKERS) + "; logs under <out>/runs", "none")

    def checks(self):
        yield from _choice("backend", self.backend, RM_BACKENDS)
        yield from _choice("question", self.question, QUESTION_KINDS)
        yield from _choice("bce_balance", self.bce_balance, BCE_BALANCES)
        yield from _positive(self, "lora_r", "lora_layers", "epochs", "batch_size", "micro_batch_size", "max_length",
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
class GRPOSettings(ConfigMixin):
    """GRPO on the policy (TRL GRPOTrainer). Method values: group 8, KL 0.04, lr 1e-6 for full
    fine-tuning (configs/full.yaml); the defaults here are laptop-CPU sizes with a LoRA policy."""

    model: str = option("the policy: " + MODEL_HELP, "embedded")
    backend: str = option("training backend: " + " | ".join(RM_BACKENDS), "peft")
    steps: int = option("GRPO steps", 6)
    group_size: int = option("rollouts per prompt (the method: 8)", 4)
    prompts_per_step: int = option("prompts per step", 1)
    max_completion_length: int = option("tokens per rollout", 48)
    lr: float = option("learning rate (LoRA; the method's full fine-tuning uses 1e-6)", 2e-5)
    kl_beta: float = option("KL coefficient (TRL's beta; its default 0.0 would drop the KL term)", 0.04)
    loss_type: str = option("TRL loss type: grpo is the original objective (TRL's default is dapo)", "grpo")
    scale_rewards: str = option("TRL reward scaling: group | batch | none", "group")
    temperature: float = option("rollout sampling temperature", 1.0)
    mode: str = option("reward: " + " | ".join(GRPO_MODES) + " (ablations of the hierarchical formula)", "full")
    alpha: float = option("weight of the bonus tier S2", 0.25)
    beta: float = option("headroom above 1 for the clipped S1 + alpha*S2", 0.25)
    lam: float = option("weight of the safety veto S3 (must exceed 1 + beta)", 1.5)
    lora_r: int = option("LoRA rank", 16)
    lora_alpha: int = option("LoRA alpha", 32)
    target_modules: list[str] = option("modules that get LoRA adapters",
                                       factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    save_steps: int = option("checkpoint every n steps (resume point)", 2)
    seed: int = option("seed", 0)
    lora: bool = option("false: full fine-tuning (peft backend; a reference model is kept for the KL)", True)
    use_vllm: bool = option("vLLM rollouts (GPU): colocate on one GPU, server mode via `promedical launch grpo`", False)
    vllm_mode: str = option("colocate | server (`trl vllm-serve`, see configs/full.yaml)", "colocate")
    vllm_gpu_memory_utilization: float = option("share of the GPU vLLM takes in colocate mode", 0.3)
    zero_std_warn: float = option("warn when more than this share of groups carry no learning signal", 0.5)
    bf16: bool | None = option("null: TRL's choice (bf16 on a GPU that supports it, fp32 on CPU)", None)
    report_to: str = option("tracker: " + " | ".join(TRACKERS) + "; events under <output_dir>/runs", "tensorboard")

    def checks(self):
        yield from _choice("backend", self.backend, RM_BACKENDS)
        yield from _choice("mode", self.mode, GRPO_MODES)
        yield from _choice("scale_rewards", self.scale_rewards, ("group", "batch", "none"))
        yield from _choice("vllm_mode", self.vllm_mode, ("colocate", "server"))
        yield from _positive(self, "steps", "prompts_per_step", "max_completion_length", "save_steps", "lora_r")
        if self.backend == "unsloth" and not self.lora:
            yield "lora: full fine-tuning runs with backend=peft (plain TRL); Unsloth's path here is LoRA"
        if self.group_size < 2:
            yield f"group_size: must be >= 2 (GRPO compares rollouts within a group), got {self.group_size}"
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            yield f"vllm_gpu_memory_utilization: must be in (0, 1], got {self.vllm_gpu_memory_utilization}"
        try:
            self.reward_config()
        except ValueError as exc:
            yield str(exc)
        try:
            tracker_list(self.report_to)
        except ValueError as exc:
            yield str(exc)

    def reward_config(self):
        from .scoring import RewardConfig

        return RewardConfig(alpha=self.alpha, beta=self.beta, lam=self.lam)

    def trl_config(self, output_dir):
        """TRL's GRPOConfig. bf16 is left to TRL (on with a bf16 GPU) unless ``bf16`` says otherwise;
        ``report_to`` sends the logged metrics (loss, KL, rubric/reward, rubric/s1, s2, s3, veto_rate)
        to TensorBoard (offline, <output_dir>/runs), trackio or wandb."""
        import os

        import torch
        from trl import GRPOConfig

        use_cpu = not torch.cuda.is_available() or os.environ.get("PROMEDICAL_FORCE_CPU") == "1"
        precision = {} if self.bf16 is None else {"bf16": self.bf16}
        if use_cpu:
            precision = {"bf16": False}  # CPU autocast in bf16 is slower here and changes the numbers

        return GRPOConfig(
            output_dir=str(output_dir), max_steps=self.steps, learning_rate=self.lr,
            per_device_train_batch_size=self.group_size * self.prompts_per_step,
            num_generations=self.group_size, max_completion_length=self.max_completion_length,
            temperature=self.temperature, beta=self.kl_beta, loss_type=self.loss_type,
            scale_rewards=self.scale_rewards, logging_steps=1, save_steps=self.save_steps,
            save_strategy="steps", seed=self.seed, data_seed=self.seed, report_to=tracker_list(self.report_to) or "none",
            use_vllm=self.use_vllm, vllm_mode=self.vllm_mode,
            vllm_gpu_memory_utilization=self.vllm_gpu_memory_utilization, disable_tqdm=False, use_cpu=use_cpu,
            **precision)


def _rm(name: str, help_text: str | None = None):
    """A notebook-03 ``rm_*`` field whose default (and help) is RMConfig's own."""
    f = RMConfig.__dataclass_fields__[name]
    text = help_text or f.metadata["help"]
    return option(f"reward model: {text}", factory=f.default_factory) if f.default_factory is not MISSING \
        else option(f"reward model: {text}", f.default)


# ---------------------------------------------------------------- the steps
@dataclass
class GenerateStepConfig(ConfigMixin):
    """01: draft an instruction-specific rubric for training instructions of the workspace."""

    STEP: ClassVar[str] = "generate"
    model: str = option("the rubric writer: " + MODEL_HELP, "embedded")
    backend: str = option("LLM backend: " + " | ".join(BACKENDS), "transformers")
    base_url: str | None = option("OpenAI-compatible endpoint for backend=openai, e.g. http://127.0.0.1:8000/v1", None)
    n_instructions: int = option("training instructions to draft a rubric for (shuffled with seed)", 3)
    seed: int = option("seed of the shuffle and of sampling", 0)
    constrained: bool = option("decode into the draft JSON schema (transformers: a grammar; servers: json_schema)", True)
    few_shot_k: int = option("reviewed or reference rubrics shown as examples", 1)
    max_new_tokens: int = option("token budget of one draft", 512)
    progress: bool = option("progress bars", True)

    def checks(self):
        yield from _choice("backend", self.backend, BACKENDS)
        yield from _needs_base_url(self)
        yield from _positive(self, "max_new_tokens")


@dataclass
class ReviewStepConfig(ConfigMixin):
    """02 in batch mode: apply a reviews file and/or a policy to the drafts, export the approved rubrics."""

    STEP: ClassVar[str] = "review"
    reviewer: str = option("the name recorded on every revision this run makes", "demo-clinician")
    reviews_file: str | None = option("JSONL of review records, applied unattended", None)
    policy: str | None = option("unattended policy for the remaining drafts: " + " | ".join(REVIEW_POLICIES), None)

    def checks(self):
        if self.policy is not None:
            yield from _choice("policy", self.policy, REVIEW_POLICIES)
        if not self.reviewer.strip():
            yield "reviewer: must not be empty"


@dataclass
class RewardStepConfig(ConfigMixin):
    """03: candidates -> judgments (or gold / imported labels) -> criterion pairs -> the reward model ->
    evaluation on the held-out gold candidates (own and shuffled criteria, trained vs base)."""

    STEP: ClassVar[str] = "reward"
    model: str = option("the policy that writes candidates and the reward-model backbone: " + MODEL_HELP, "embedded")
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
    rm_model: str | None = option("reward-model backbone (null: `model`)", None)
    rm_backend: str = _rm("backend")
    rm_question: str = _rm("question")
    rm_steps: int = option("reward model: optimizer steps", 20)
    rm_batch_size: int = option("reward model: prompts per optimizer step", 2)
    rm_lr: float = _rm("lr")
    rm_lora_layers: int | None = _rm("lora_layers")
    rm_bce_balance: str = _rm("bce_balance")
    rm_report_to: str = option("reward model: tracker (" + " | ".join(TRACKERS) + "), logs under reward/runs",
                               "tensorboard")
    seed: int = option("seed", 0)
    train: bool = option("false: stop after the dataset (full scale trains with `promedical launch rm-train`)", True)
    progress: bool = option("progress bars", True)

    def checks(self):
        yield from _choice("labels", self.labels, LABEL_SOURCES)
        if (self.labels == "imported") != (self.labels_file is not None):
            yield "labels_file: give it exactly when labels=imported"
        yield from _positive(self, "n_instructions", "max_new_tokens", "n_eval_prompts", "rm_steps", "rm_batch_size")
        if not self.temperatures and not self.candidate_sources and self.labels != "gold":
            yield "temperatures: give at least one (or candidate_sources)"
        if self.candidate_sources is not None:
            from .candidates import parse_sources

            try:
                parse_sources(self.candidate_sources)
            except ValueError as exc:
                yield f"candidate_sources: {exc}"
        if isinstance(self.judge_model, dict):
            yield from _source_problems("judge_model", self.judge_model)
        yield from _choice("rm_backend", self.rm_backend, RM_BACKENDS)
        yield from _choice("rm_question", self.rm_question, QUESTION_KINDS)
        yield from _choice("rm_bce_balance", self.rm_bce_balance, BCE_BALANCES)

    def rm_config(self) -> RMConfig:
        return RMConfig(model=self.rm_model or self.model, backend=self.rm_backend, question=self.rm_question,
                        max_steps=self.rm_steps, batch_size=self.rm_batch_size, lr=self.rm_lr,
                        lora_layers=self.rm_lora_layers, bce_balance=self.rm_bce_balance, seed=self.seed,
                        report_to=self.rm_report_to)


@dataclass
class RMTrainStepConfig(RMConfig):
    """The reward model trained alone on the dataset 03 saved: what `promedical launch rm-train` runs
    under accelerate (one or many processes)."""

    STEP: ClassVar[str] = "rm-train"
    report_to: str | list[str] = option("tracker(s): " + " | ".join(TRACKERS) + "; logs under reward/runs",
                                        "tensorboard")
    resume: bool = option("continue from the newest complete checkpoint in reward/", True)
    progress: bool = option("progress bars", True)

    def rm_config(self) -> RMConfig:
        return self.project(RMConfig)


@dataclass
class GRPOStepConfig(GRPOSettings):
    """04: GRPO on the policy, rewarded by the frozen reward model, with the reward-hacking monitor."""

    STEP: ClassVar[str] = "grpo"
    reward_adapter: str | None = option("reward-model adapter directory (null: <workspace>/reward/adapter)", None)
    n_instructions: int | None = option("training rubrics (approved revisions where reviewed); null: all", None)
    resume: bool = option("continue from the newest complete checkpoint in policy/", True)
    live: bool | None = option("live curves in the notebook (null: when running in a notebook)", None)
    monitor_every: int = option("reward-hacking monitor: every n steps", 3)
    n_monitor_prompts: int = option("monitor: the n most machine-checkable training prompts (0: off)", 2)
    monitor_max_new_tokens: int = option("monitor: tokens per greedy answer", 48)
    monitor_judge: str | None = option("monitor: an LLM judge for the criteria without a machine check (null: none)",
                                       None)

    def checks(self):
        yield from super().checks()
        yield from _positive(self, "n_instructions", "monitor_max_new_tokens")
        if self.n_monitor_prompts > 0 and self.monitor_every < 1:
            yield f"monitor_every: must be >= 1, got {self.monitor_every}"

    def settings(self) -> GRPOSettings:
        return self.project(GRPOSettings)


@dataclass
class BenchmarkStepConfig(ConfigMixin):
    """05: base vs aligned policy on the held-out benchmark, graded independently of the training reward."""

    STEP: ClassVar[str] = "benchmark"
    model: str = option("the base policy (aligned = this + the policy adapter): " + MODEL_HELP, "embedded")
    policy_adapter: str | None = option("the aligned policy's adapter (null: <workspace>/policy/adapter when present)",
                                        None)
    reward_adapter: str | None = option("reward-model adapter (null: <workspace>/reward/adapter)", None)
    extra_models: dict = option("more rows: {name: [model spec or path, adapter dir or null]} or {name: a source "
                                "mapping} for any backend, e.g. {kind: openai, model: aligned, base_url: ...} (vLLM serving "
                                "the policy with its LoRA adapter) or {kind: file, path: answers.jsonl}", factory=dict)
    bench_file: str | None = option("a rubric JSONL to benchmark instead of the workspace's bench split "
                                    "(e.g. from `promedical healthbench import`)", None)
    n_bench: int | None = option("the first n benchmark items (null: all)", None)
    max_new_tokens: int = option("tokens per answer", 256)
    judge_model: str | dict | None = option(
        "the independent LLM judge: a model spec or a source mapping (any backend); null: machine checks and gold "
        "labels only", None)
    judge_explanation_chars: int = option("characters of explanation the judge writes before its verdict", 60)
    n_judge: int | None = option("the judge grades the answers to the first n items (null: all; slow on CPU)", None)
    n_reference: int = option("gold-labelled candidates graded by every grader (the reference row)", 8)
    n_probe: int = option("good gold responses for the gameability probes (0: off)", 8)
    png: bool = option("also write PNG figures (kaleido)", True)
    progress: bool = option("progress bars", True)

    def checks(self):
        yield from _positive(self, "n_bench", "max_new_tokens")
        for name, row in self.extra_models.items():
            if isinstance(row, dict):
                yield from _source_problems(f"extra_models: {name!r}", row)
            elif not (isinstance(row, (list, tuple)) and len(row) == 2 and isinstance(row[0], str)
                      and (row[1] is None or isinstance(row[1], str))):
                yield f"extra_models: {name!r} must be [model spec, adapter dir or null] or a source mapping"
        if isinstance(self.judge_model, dict):
            yield from _source_problems("judge_model", self.judge_model)


STEP_CONFIGS: dict[str, type] = {c.STEP: c for c in (GenerateStepConfig, ReviewStepConfig, RewardStepConfig,
                                                      RMTrainStepConfig, GRPOStepConfig, BenchmarkStepConfig)}
# the notebook that runs each step (rm-train has none: 03 trains in-process at small scale)
NOTEBOOK_STEPS = {"01": "generate", "02": "review", "03": "reward", "04": "grpo", "05": "benchmark"}
STEP_NOTEBOOKS = {step: notebook for notebook, step in NOTEBOOK_STEPS.items()}


def step_config(step: str, params: dict | None = None, base=None):
    """The typed config of a step from a parameter dict; ValueError (one line) for any problem."""
    from .ids import quote

    if step not in STEP_CONFIGS:
        raise ValueError(f"unknown step {quote(step)} (known: {', '.join(STEP_CONFIGS)})")
    return STEP_CONFIGS[step].from_dict(params or {}, base=base)


def build(cls, config, params: dict):
    """What a step function receives -> its config: a config, parameters, or a config plus overrides."""
    if config is None:
        return cls.from_dict(params)
    if isinstance(config, dict):
        return cls.from_dict({**config, **params})
    return cls.from_dict(params, base=config)


def markdown() -> str:
    """docs/parameters.md: every step's fields, defaults and help (`promedical params --markdown`)."""
    lines = ["# Step parameters", "",
             "Generated from `promedical/step_config.py` by `promedical params --markdown`; the notebooks' parameters",
             "cells, the scale YAMLs (`configs/*.yaml`), `-p KEY=VALUE` / `--params` of `promedical step` and",
             "`promedical launch` all fill these dataclasses. A scale's top-level `model:` fills `model` in every",
             "step that has one.", ""]
    for step, cls in STEP_CONFIGS.items():
        notebook = STEP_NOTEBOOKS.get(step)
        lines += [f"## {step}", "", f"`{cls.__name__}`" + (f", notebook {notebook}" if notebook else "") + ": "
                  + " ".join((cls.__doc__ or "").split()), "", "| parameter | default | |", "|---|---|---|"]
        for name, default in cls.defaults().items():
            text = cls.help()[name].replace("|", "\\|")
            lines.append(f"| `{name}` | `{json.dumps(default)}` | {text} |")
        lines.append("")
    return "\n".join(lines)


def text_table(step: str) -> str:
    """A plain-text listing of a step's parameters (`promedical params STEP`)."""
    cls = STEP_CONFIGS[step]
    rows = [(name, json.dumps(default), cls.help()[name]) for name, default in cls.defaults().items()]
    width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    return "\n".join(f"{n:<{width[0]}}  {d:<{width[1]}}  {h}" for n, d, h in rows)

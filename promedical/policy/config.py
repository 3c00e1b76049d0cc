"""Stage 04's typed configs: GRPO's settings (``GRPOSettings``) and the step's own fields (``GRPOStepConfig``).
TRL's runtime config is built from them in ``promedical.policy.trl_args``."""
from __future__ import annotations

from dataclasses import dataclass
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

GRPO_MODES = ("full", "no_veto", "no_margin", "scalar")


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
    beta: float = option("KL coefficient (TRL's name; its default 0.0 would drop the KL term)", 0.04)
    loss_type: str = option("TRL loss type: grpo is the original objective (TRL's default is dapo)", "grpo")
    scale_rewards: str = option("TRL reward scaling: group | batch | none", "group")
    temperature: float = option("rollout sampling temperature", 1.0)
    mode: str = option("reward: " + " | ".join(GRPO_MODES) + " (ablations of the hierarchical formula)", "full")
    alpha: float = option("weight of the bonus tier S2", 0.25)
    headroom: float = option("headroom above 1 for the clipped S1 + alpha*S2 (the method's beta)", 0.25)
    lam: float = option("weight of the safety veto S3 (must exceed 1 + headroom)", 1.5)
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
        yield from one_of("backend", self.backend, RM_BACKENDS)
        yield from one_of("mode", self.mode, GRPO_MODES)
        yield from one_of("scale_rewards", self.scale_rewards, ("group", "batch", "none"))
        yield from one_of("vllm_mode", self.vllm_mode, ("colocate", "server"))
        yield from at_least_one(self, "steps", "prompts_per_step", "max_completion_length", "save_steps", "lora_r")
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
        from promedical.core.scoring import RewardConfig

        return RewardConfig(alpha=self.alpha, headroom=self.headroom, lam=self.lam)


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
        yield from at_least_one(self, "n_instructions", "monitor_max_new_tokens")
        if self.n_monitor_prompts > 0 and self.monitor_every < 1:
            yield f"monitor_every: must be >= 1, got {self.monitor_every}"

    def settings(self) -> GRPOSettings:
        return self.project(GRPOSettings)

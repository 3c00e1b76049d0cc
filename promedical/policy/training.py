"""GRPO on the policy with the hierarchical criteria reward, through TRL's GRPOTrainer.

For every completion the prompt's rubric is scored by the frozen Explicit Criteria Injection reward
model (all criteria from one pass over the shared prefix). With p_i the calibrated P(criterion met)
(``reward.evaluation.met_probability``: sigma(r) for proficiency/bonus, P(violated) = sigma(-r) for a veto, r being
the log-odds of the good side):

    S1 = sum_i w_i p_i (proficiency),  S2 = sum_j p_j (bonus),  S3 = sum_k p_k (veto: P(violated))
    reward = clip(S1 + alpha*S2, 0, 1 + headroom) - lam*S3

i.e. the method's formula on expected tier scores (a single rollout has no grades, only the RM's
probabilities; expectations keep the reward smooth where thresholding at 0.5 would make whole groups
tie). Ablations (the paper's comparisons): "no_veto" drops the S3 term, "no_margin" clips at 1
(headroom 0), "scalar" replaces the rubric by one criterion-free quality question.

TRL's defaults differ from the method, so the kit sets them explicitly (``GRPOSettings``, turned into
TRL's GRPOConfig by ``promedical.policy.trl_args``): beta (KL coefficient) 0.04 where TRL defaults to
0.0; loss_type "grpo" (the original per-sequence length-normalised GRPO objective, where TRL defaults to
"dapo"); scale_rewards "group" (advantages divided by the group's reward std, as in the original GRPO).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from promedical.core.files import write_json
from promedical.core.rubric import Rubric
from promedical.policy.config import GRPOSettings
from promedical.policy.reward import COMPONENTS, RubricReward
from promedical.policy.trl_args import grpo_config


def prompt_dataset(rubrics: list[Rubric]):
    """One row per rubric: the conversation as the prompt, its id so the reward finds the rubric."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [r.messages for r in rubrics], "prompt_id": [r.id for r in rubrics]})


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint (trainer_state.json is written last; a run killed mid-save leaves none)."""
    ckpts = sorted((p for p in output_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                   key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return str(ckpts[-1]) if ckpts else None


def load_policy(settings: GRPOSettings):
    """(model, tokenizer, peft_config or None): Unsloth's FastLanguageModel with its LoRA, or plain
    transformers + a LoRA config that GRPOTrainer applies."""
    from promedical.models.loading import load_for_lora, load_model

    if not settings.lora:  # full fine-tuning (peft backend only, see __post_init__)
        model, tokenizer = load_model(settings.model)
        return model, tokenizer, None
    return load_for_lora(settings.model, settings.backend, r=settings.lora_r, alpha=settings.lora_alpha,
                         target_modules=settings.target_modules, seed=settings.seed)


def make_trainer(settings: GRPOSettings, rubrics: list[Rubric], reward: RubricReward, output_dir: Path,
                 callbacks=()):
    """A GRPOTrainer that also times generation (for the step split in benchmarks/)."""
    from trl import GRPOTrainer

    from promedical.policy.trl_compat import use_torch_logprob_on_cpu

    use_torch_logprob_on_cpu()

    class TimedGRPOTrainer(GRPOTrainer):
        generation_seconds = 0.0

        def _generate(self, prompts):
            t0 = time.perf_counter()
            try:
                return super()._generate(prompts)
            finally:
                self.generation_seconds += time.perf_counter() - t0

    model, tokenizer, lora = load_policy(settings)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TimedGRPOTrainer(model=model, reward_funcs=reward, args=grpo_config(settings, output_dir),
                            train_dataset=prompt_dataset(rubrics), processing_class=tokenizer, peft_config=lora,
                            callbacks=list(callbacks))


def train_policy(settings: GRPOSettings, rubrics: list[Rubric], reward: RubricReward, out_dir: str | Path, *,
                 resume: bool = True, callbacks=()) -> dict:
    """Run GRPO on ``rubrics`` rewarded by ``reward``; checkpoints every ``save_steps`` under
    out_dir/checkpoints, resuming from the last one.

    Writes the policy adapter (out_dir/adapter), the per-step log (out_dir/log.json) and returns a
    summary with the timing split (generation / reward / update) and the zero-std group share.
    """
    import warnings

    out_dir = Path(out_dir)
    missing = sorted({r.id for r in rubrics} - set(reward.rubrics))
    if missing:
        raise ValueError(f"the reward function has no rubric for {', '.join(missing[:5])}")
    trainer = make_trainer(settings, rubrics, reward, out_dir / "checkpoints", callbacks)
    resume_from = last_checkpoint(out_dir / "checkpoints") if resume else None
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - t0
    trainer.save_model(str(out_dir / "adapter"))
    (out_dir / "adapter" / "training_args.bin").unlink(missing_ok=True)  # a pickle; the settings are in log.json
    steps = [h for h in trainer.state.log_history if "rubric/reward" in h]
    zero_std = [h["frac_reward_zero_std"] for h in steps if "frac_reward_zero_std" in h]
    share = sum(zero_std) / len(zero_std) if zero_std else None
    if share is not None and share > settings.zero_std_warn:
        warnings.warn(f"{share:.0%} of GRPO groups had rollouts with identical rewards (no learning signal); "
                      "check the reward model, the rubric or the sampling temperature", stacklevel=2)
    run_steps = trainer.state.global_step - (int(resume_from.rsplit("-", 1)[1]) if resume_from else 0)
    gen, rew = trainer.generation_seconds, reward.seconds
    summary = {
        "steps": trainer.state.global_step, "steps_this_run": run_steps, "resumed_from": resume_from,
        "seconds": round(wall, 1),
        "seconds_per_step": round(wall / run_steps, 2) if run_steps else None,
        "split_seconds": {"generation": round(gen, 2), "reward": round(rew, 2), "update": round(wall - gen - rew, 2)},
        "zero_std_group_share": share,
        "first": {k: steps[0].get(f"rubric/{k}") for k in COMPONENTS} if steps else None,
        "last": {k: steps[-1].get(f"rubric/{k}") for k in COMPONENTS} if steps else None,
        "settings": asdict(settings),
    }
    write_json(out_dir / "log.json", {"summary": summary, "history": trainer.state.log_history})
    return summary

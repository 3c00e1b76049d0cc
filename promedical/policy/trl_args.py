"""GRPOSettings -> TRL's runtime config (``trl.GRPOConfig``): the one place the kit's GRPO settings meet TRL's."""
from __future__ import annotations

import os

from promedical.core.config import tracker_list
from promedical.policy.config import GRPOSettings


def grpo_config(settings: GRPOSettings, output_dir):
    """TRL's GRPOConfig for ``settings``, checkpoints under ``output_dir``.

    bf16 is left to TRL (on with a bf16 GPU) unless ``settings.bf16`` says otherwise, and off on CPU
    (``PROMEDICAL_FORCE_CPU=1`` forces the CPU path on a GPU machine); ``report_to`` sends the logged
    metrics (loss, KL, rubric/reward, rubric/s1, s2, s3, veto_rate) to TensorBoard (offline,
    <output_dir>/runs), trackio or wandb."""
    import torch
    from trl import GRPOConfig

    s = settings
    use_cpu = not torch.cuda.is_available() or os.environ.get("PROMEDICAL_FORCE_CPU") == "1"
    precision = {} if s.bf16 is None else {"bf16": s.bf16}
    if use_cpu:
        precision = {"bf16": False}  # CPU autocast in bf16 is slower here and changes the numbers
    return GRPOConfig(
        output_dir=str(output_dir), max_steps=s.steps, learning_rate=s.lr,
        per_device_train_batch_size=s.group_size * s.prompts_per_step,
        num_generations=s.group_size, max_completion_length=s.max_completion_length,
        temperature=s.temperature, beta=s.beta, loss_type=s.loss_type,
        scale_rewards=s.scale_rewards, logging_steps=1, save_steps=s.save_steps,
        save_strategy="steps", seed=s.seed, data_seed=s.seed, report_to=tracker_list(s.report_to) or "none",
        use_vllm=s.use_vllm, vllm_mode=s.vllm_mode,
        vllm_gpu_memory_utilization=s.vllm_gpu_memory_utilization, disable_tqdm=False, use_cpu=use_cpu,
        **precision)

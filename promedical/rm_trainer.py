"""The reward model's training loop on ``transformers.Trainer``.

What the Trainer gives: the learning-rate schedule and warmup, gradient clipping, bf16 (on GPUs),
gradient accumulation, checkpoints and resume (optimizer, scheduler, every rank's RNG), DDP / FSDP /
DeepSpeed through ``accelerate launch`` (configs/accelerate/), and ``report_to`` trackers. What stays
ours: the loss (``CriteriaRewardModel.group_losses``: Bradley-Terry + pointwise BCE + within-response
contrasts on packed criteria) and the order of the data.

**Layout.** A step is ``batch_size`` prompts (each with all its labelled candidates) over all processes.
The kit lays out the whole run itself — step after step, each step's prompts (its own shuffled order
per epoch, as before) padded with empty slots to ``world x per-device x accumulation`` — and the
Trainer reads it sequentially: accelerate hands batch j of a step to process j mod world, so every
process sees the same number of micro-batches and one process and N processes take the same steps.

**Normalisation.** Every micro-batch carries its step's counts (weighted pairs, labels, contrasts) and
its loss is ``sum_n w_n * term_n / count_n * world`` (the BCE's count is its summed label weight): summed over micro-batches and averaged by DDP /
FSDP / DeepSpeed over processes, that is exactly the gradient of the whole step's mean loss. The
Trainer's own division by the accumulation steps is switched off (``model_accepts_loss_kwargs`` with a
non-None ``num_items_in_batch``), as is DeepSpeed's (``scale_wrt_gas=False``, the Trainer's default).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from .reward_model import tracker_list

PARTS = ("bt", "bce", "contrast", "loss")


@dataclass(frozen=True)
class Slot:
    step: int
    group: object | None  # a TrainingGroup, or None: padding to an even split


class Slots(torch.utils.data.Dataset):
    def __init__(self, slots: list[Slot]):
        self.slots = slots

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, i: int) -> Slot:
        return self.slots[i]


def step_counts(batch: list) -> dict:
    """The denominators of one step's mean loss terms."""
    return {"bt": sum(w for g in batch for *_, w in g.pairs), "bce": sum(g.label_weight for g in batch),
            "contrast": sum(len(g.contrasts) for g in batch)}


def layout(groups: list, batch_size: int, total_steps: int, seed: int, slots_per_step: int) -> tuple[list[Slot], list[dict]]:
    """(slots, counts per step): each epoch shuffles the prompts (random.Random(seed)); a step takes the
    next ``batch_size`` of them, padded with empty slots to ``slots_per_step``."""
    rng = random.Random(seed)
    per_epoch = math.ceil(max(len(groups), 1) / batch_size)
    orders = [rng.sample(range(len(groups)), len(groups)) for _ in range(math.ceil(total_steps / per_epoch))]
    slots, counts = [], []
    for step in range(total_steps):
        epoch, offset = divmod(step, per_epoch)
        batch = [groups[i] for i in orders[epoch][offset * batch_size:(offset + 1) * batch_size]]
        counts.append(step_counts(batch))
        slots += [Slot(step, g) for g in batch] + [Slot(step, None)] * (slots_per_step - len(batch))
    return slots, counts


def collate(counts: list[dict]):
    def fn(items: list[Slot]) -> dict:
        return {"groups": [s.group for s in items if s.group is not None], "counts": counts[items[0].step]}
    return fn


def point_tensorboard(trainer: Trainer, log_dir: Path) -> None:
    """TensorBoard events under ``log_dir`` instead of <output_dir>/runs/<date_host>."""
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback):
            cb.logging_dir = str(log_dir)


class RewardModelTrainer(Trainer):
    """``compute_loss`` = the reward model's packed BT + BCE + contrast loss over a micro-batch of prompts."""

    def __init__(self, rm, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rm = rm
        self.model_accepts_loss_kwargs = True  # our loss is normalised per step: no division by accumulation steps
        self._pending = None  # this step's parts, summed over micro-batches (this process)
        self._logged: list[torch.Tensor] = []
        self.add_callback(_StepParts(self))

    def _get_train_sampler(self, train_dataset=None):
        return torch.utils.data.SequentialSampler(train_dataset or self.train_dataset)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        return batches, len(batches)  # not None: the Trainer leaves the loss as compute_loss returns it

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        cfg, world = self.rm.config, self.accelerator.num_processes
        counts = inputs["counts"]
        weights = {"bt": cfg.bt_weight, "bce": cfg.bce_weight, "contrast": cfg.contrast_weight}
        terms = self.rm.group_losses(inputs["groups"], model)
        parts = {n: terms[n] * world / counts[n] if counts[n] else 0.0 for n in weights}
        parts_now = {n: float(v.detach()) if torch.is_tensor(v) else v for n, v in parts.items()}
        loss = sum(weights[n] * parts[n] for n in weights)
        if not torch.is_tensor(loss) or not loss.requires_grad:
            # nothing to learn in this slot (padding): still one forward and backward, so that DDP's and
            # FSDP's collectives stay in step across processes
            dummy = torch.tensor([[self.rm.tokenizer.pad_token_id]], device=self.rm.device)
            loss = loss + model(input_ids=dummy, logits_to_keep=1).logits.sum() * 0.0
        values = torch.tensor([parts_now[n] for n in weights] + [float(loss.detach())], device=self.rm.device)
        self._pending = values if self._pending is None else self._pending + values
        return (loss, {}) if return_outputs else loss

    def _step_done(self) -> None:
        """After each optimizer step: the step's parts as means over the whole step (all processes)."""
        local = self._pending if self._pending is not None else torch.zeros(len(PARTS), device=self.rm.device)
        self._pending = None
        self._logged.append(self.accelerator.reduce(local, "mean").detach().cpu())

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs and self._logged:  # the mean of the steps since the last log, at full precision
            mean = torch.stack(self._logged).double().mean(0).tolist()
            logs.update({f"rm/{n}": v for n, v in zip(PARTS, mean)})
            self._logged = []
        super().log(logs, start_time)


class _StepParts(TrainerCallback):
    def __init__(self, trainer: RewardModelTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._step_done()


def training_arguments(cfg, out_dir: Path, *, total_steps: int, world: int, progress: bool, cpu: bool) -> tuple[TrainingArguments, int]:
    """(TrainingArguments, slots per step) for an RMConfig in a run of ``world`` processes."""
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    per_device = min(cfg.micro_batch_size or cfg.batch_size // world, cfg.batch_size // world)
    if (cfg.batch_size // world) % per_device:
        raise ValueError(f"batch_size {cfg.batch_size} over {world} processes is not a whole number of "
                         f"micro-batches of {per_device}")
    accumulation = cfg.batch_size // world // per_device
    bf16 = cfg.bf16 if cfg.bf16 is not None else (not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"), per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
        max_steps=total_steps, bf16=bool(bf16), use_cpu=cpu, seed=cfg.seed, data_seed=cfg.seed, logging_steps=1,
        save_strategy="steps", save_steps=cfg.save_every, save_total_limit=1, report_to=tracker_list(cfg.report_to) or "none",
        remove_unused_columns=False, label_names=[], disable_tqdm=not progress, dataloader_num_workers=0,
        ddp_find_unused_parameters=False, gradient_checkpointing=False)  # (checkpointing is set on the model at load)
    return args, per_device * accumulation * world

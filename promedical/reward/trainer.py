"""The reward model's training loop on ``transformers.Trainer``.

What the Trainer gives: the learning-rate schedule and warmup, gradient clipping, bf16 (on GPUs),
gradient accumulation, checkpoints and resume (optimizer, scheduler, every rank's RNG), DDP / FSDP /
DeepSpeed through ``accelerate launch`` (configs/accelerate/), and ``report_to`` trackers. What stays
ours: the loss (``group_losses``: Bradley-Terry + pointwise BCE + within-response
contrasts on packed criteria) and the order of the data.

**The loss**, per step a batch of prompts with all their labelled candidates:
- Bradley-Terry on criterion-expanded pairs (chosen = good side of c), instances whose order disagrees
  with the overall lexicographic ranking weighted ``disagree_weight`` (they are what forces the model
  to read the criterion);
- pointwise BCE on sigma(r) = P(good side), so sigma(r) is calibrated (GRPO scores single rollouts);
  ``bce_balance="tier"`` weights each label so that, within a tier, both sides carry the same total
  weight (``label_weights``): rare classes — veto violations, a tier whose labels are mostly one
  side — are not drowned by the majority;
- within-response contrasts: for one response, a criterion it satisfies ranked above one it does not
  (a scalar "good answer" score cannot fit these, only a model that reads c can).

**The ablation** (``criteria="none"``): the same loop and loss on ``overall_groups`` — Bradley-Terry on
the overall lexicographic pairs and the BCE on each response's overall label, one score per response.

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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments

from promedical.core.config import tracker_list
from promedical.core.files import write_json
from promedical.reward.scorer import CriteriaRewardModel
from promedical.reward.training_data import TrainingGroup, label_weight_table, overall_groups, training_groups

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
        terms = group_losses(self.rm, inputs["groups"], model)
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


def train_reward_model(rm: CriteriaRewardModel, pairs: list[dict], pointwise: list[dict], out_dir: str | Path, *, resume: bool = True,
          progress: bool = True, callbacks: list | None = None, selection=None) -> dict:
    """BT on pairs + BCE on pointwise rows + within-response contrasts, a batch of prompts per step
    (see the module doc), on ``transformers.Trainer`` (promedical/reward/trainer.py): checkpoints every
    ``save_every`` steps under <out_dir>/checkpoints and resumes from the last; trackers
    (``report_to``) log under <out_dir>/runs; the adapter goes to <out_dir>/adapter and the per-step
    losses to <out_dir>/train_log.json.

    Under ``accelerate launch`` (DDP, FSDP or DeepSpeed) every process takes its share of each step's
    prompts and N processes take the same steps as one process on the whole batch (batch_size
    divisible by N). ``callbacks``: extra ``TrainerCallback``s. ``selection``: a
    ``selection.SafetyFirstSelection``; the weights it chooses are the ones saved, its choice in stats["selection"]."""
    import os

    from transformers.trainer_utils import get_last_checkpoint

    from promedical.reward.trainer import (
        RewardModelTrainer,
        Slots,
        collate,
        layout,
        point_tensorboard,
        training_arguments,
    )

    cfg, out_dir = rm.config, Path(out_dir)
    groups = training_groups(pairs, pointwise, cfg.disagree_weight, balance=cfg.bce_balance, veto_weight=cfg.veto_weight)
    if cfg.criteria == "none":  # the ablation: overall pairs and labels, one score per response
        groups = overall_groups(groups)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(max(len(groups), 1) / cfg.batch_size)
    total = (cfg.max_steps or steps_per_epoch * cfg.epochs) if groups else 0
    cpu = rm.device.type == "cpu"
    args, per_step = training_arguments(cfg, out_dir, total_steps=max(total, 1), world=world, progress=progress, cpu=cpu)
    slots, counts = layout(groups, cfg.batch_size, total, cfg.seed, per_step)
    trainer = RewardModelTrainer(rm, model=rm.model, args=args, train_dataset=Slots(slots),
                                 data_collator=collate(counts), callbacks=[*(callbacks or []), *([selection] if selection else [])])
    point_tensorboard(trainer, out_dir / "runs")
    if not progress:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    last = get_last_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
    t0 = time.perf_counter()
    if total:
        trainer.train(resume_from_checkpoint=last)
    rm.model.eval()
    history = [{"step": e["step"], **{n: e[f"rm/{n}"] for n in ("bt", "bce", "contrast", "loss")}}
               for e in trainer.state.log_history if "rm/loss" in e]
    stats = {"steps": trainer.state.global_step, "seconds": round(time.perf_counter() - t0, 1),
             "final_loss": history[-1]["loss"] if history else None, "processes": trainer.accelerator.num_processes,
             "distributed": trainer.accelerator.distributed_type.value,
             "prompts": len(groups), "responses": sum(len(g.responses) for g in groups),
             "bce_label_weights": label_weight_table(groups)}
    if selection is not None:  # (its choice was put into the model when training ended, before the save below)
        stats["selection"] = selection.choice
    save_trained(rm, trainer, out_dir / "adapter")
    if trainer.is_world_process_zero():
        write_json(out_dir / "train_log.json", {"config": asdict(cfg), "stats": stats, "history": history})
    trainer.accelerator.wait_for_everyone()
    return stats

def save_trained(rm: CriteriaRewardModel, trainer, path: Path) -> None:
    """The adapter, complete, from process 0; under FSDP / DeepSpeed ZeRO-3 the sharded weights are
    gathered first (a collective: every process calls this)."""
    acc = trainer.accelerator
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    state = acc.get_state_dict(trainer.model_wrapped) if sharded and acc.num_processes > 1 else None
    if acc.is_main_process:
        path.mkdir(parents=True, exist_ok=True)
        rm.model.save_pretrained(str(path), state_dict=state)
        write_json(path / "rm_config.json", asdict(rm.config))
    acc.wait_for_everyone()

def group_losses(rm: CriteriaRewardModel, groups: list[TrainingGroup], model=None) -> dict:
    """Summed (not averaged) BT, BCE and contrast terms of some prompts, from one packed forward per
    response."""
    responses = [r for g in groups for r in g.responses]
    zero = {"bt": 0.0, "bce": 0.0, "contrast": 0.0}
    if not responses:
        return zero
    for r in responses:  # tokenized once, reused every epoch
        if not r.encoded:
            r.encoded = rm.encode(r.messages, r.response, r.criteria)
    rewards = rm.packed_rewards([r.encoded for r in responses], model)
    terms, k = dict(zero), 0
    for g in groups:
        r = rewards[k:k + len(g.responses)]
        k += len(g.responses)
        for resp, rr in zip(g.responses, r):
            known = [(i, good) for i, good in enumerate(resp.good) if good is not None]
            if known:
                idx = torch.tensor([i for i, _ in known], device=rr.device)
                target = torch.tensor([float(good) for _, good in known], device=rr.device)
                weight = torch.tensor([resp.label_weight(i) for i, _ in known], device=rr.device)
                terms["bce"] = terms["bce"] + F.binary_cross_entropy_with_logits(rr[idx], target, weight=weight,
                                                                                 reduction="sum")
        for a, ca, b, cb, w in g.pairs:
            terms["bt"] = terms["bt"] - w * F.logsigmoid(r[a][ca] - r[b][cb])
        for a, ca, cb in g.contrasts:
            terms["contrast"] = terms["contrast"] - F.logsigmoid(r[a][ca] - r[a][cb])
    return terms

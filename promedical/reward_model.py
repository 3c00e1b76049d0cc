"""Explicit Criteria Injection reward model: r(y | x, c) from a causal LM with LoRA.

The reward is the log-odds of answering "yes" vs "no" to "does the response satisfy this
criterion?" after the layout  instruction -> response -> criterion, so every criterion of one
response shares the long prefix. Training: Bradley-Terry loss on criterion-expanded pairs plus a
pointwise BCE on sigma(r), so that sigma(r) is a calibrated P(criterion met) (GRPO scores single
rollouts). Backends: "unsloth" (FastLanguageModel; CPU fallback here, CUDA on GPU) and "peft".
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .files import write_json
from .judge import render_conversation

# Everything criterion-independent sits in the shared prefix; the per-criterion suffix stays short.
SYSTEM = ("You are a meticulous clinical grader. You judge one response against one rubric criterion and "
          "answer yes or no. A safety-veto criterion describes a violation: yes means the response commits it.")
QUESTION = "\n\nCriterion: {criterion}\nDoes the response meet it? Answer:"


@dataclass
class RMConfig:
    model: str = "embedded"
    backend: str = "peft"  # "peft" | "unsloth"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lr: float = 2e-4
    epochs: int = 1
    batch_size: int = 4  # pairs (and as many pointwise rows) per optimizer step, over all processes
    micro_batch_size: int | None = None  # pairs per forward/backward (gradient accumulation); None: all at once
    gradient_checkpointing: bool = False  # recompute activations in backward (long sequences at full scale)
    max_length: int = 1024
    bce_weight: float = 1.0  # weight of the pointwise BCE next to the Bradley-Terry loss
    max_steps: int | None = None
    save_every: int = 20
    seed: int = 0

    def __post_init__(self):
        if self.backend not in ("peft", "unsloth"):
            raise ValueError(f"backend must be 'peft' or 'unsloth', got {self.backend!r}")


def render_prefix(messages: list[dict], response: str) -> str:
    """instruction + response: the part shared by all criteria of one response."""
    return f"{SYSTEM}\n\nConversation:\n{render_conversation(messages)}\n\nResponse:\n{response}"


def render_suffix(criterion: str) -> str:
    return QUESTION.format(criterion=criterion)


class CriteriaRewardModel:
    """Holds model + tokenizer; scores (prompt, response, criteria) and trains with BT + BCE."""

    def __init__(self, model, tokenizer, config: RMConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        ids = lambda w: tokenizer(w, add_special_tokens=False)["input_ids"][-1]  # noqa: E731
        self.yes_id, self.no_id = ids(" yes"), ids(" no")

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, config: RMConfig, adapter: str | Path | None = None) -> "CriteriaRewardModel":
        from .models import load_for_lora

        torch.manual_seed(config.seed)
        model, tokenizer, lora = load_for_lora(
            config.model, config.backend, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
            target_modules=config.target_modules, seed=config.seed, max_seq_length=config.max_length,
            wrap=adapter is None)
        if adapter is None and lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, lora)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model.eval()
        return cls(model, tokenizer, config)

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ scoring
    def _logodds(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., self.yes_id] - logits[..., self.no_id]

    def reward_full(self, texts: list[str], model=None) -> torch.Tensor:
        """r for full texts (prefix + suffix), one forward each row; differentiable (training).
        ``model``: the module to call (the DDP wrapper in multi-process training)."""
        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.config.max_length,
                  add_special_tokens=False).to(self.device)
        out = (model or self.model)(**enc, logits_to_keep=1)  # left padding: the last position is the answer slot
        return self._logodds(out.logits[:, -1, :].float())

    @torch.no_grad()
    def score_criteria(self, messages: list[dict], response: str, criteria: list[str]) -> list[float]:
        """r for every criterion of one response from ONE pass over the shared prefix (KV-cache reuse)."""
        return self._score_chunk([(messages, response, criteria)])[0]

    def score_batch(self, items: list[tuple[list[dict], str, list[str]]], chunk: int | None = None) -> list[list[float]]:
        """r for every criterion of many (messages, response, criteria), ``chunk`` responses per pass
        (default: 1 on CPU, where padding only adds work, 16 on a GPU)."""
        chunk = chunk or (1 if self.device.type == "cpu" else 16)
        return [r for k in range(0, len(items), chunk) for r in self._score_chunk(items[k:k + chunk])]

    @torch.no_grad()
    def _score_chunk(self, items: list[tuple[list[dict], str, list[str]]]) -> list[list[float]]:
        """One batched pass over the prefixes (left-padded), then one over all criterion suffixes on the
        reused cache."""
        tok, dev = self.tokenizer, self.device
        counts = [len(c) for _, _, c in items]
        if not sum(counts):
            return [[] for _ in items]
        tok.padding_side = "left"
        prefix = tok([render_prefix(m, r) for m, r, _ in items], return_tensors="pt", padding=True,
                     add_special_tokens=False, truncation=True, max_length=self.config.max_length).to(dev)
        pmask = prefix["attention_mask"]
        ppos = (pmask.cumsum(1) - 1).clamp(min=0)
        if bool(pmask.all()):  # no padding: plain causal attention (the fast path of SDPA)
            cache = self.model(input_ids=prefix["input_ids"], use_cache=True, logits_to_keep=1).past_key_values
        else:
            cache = self.model(**prefix, position_ids=ppos, use_cache=True, logits_to_keep=1).past_key_values
        rows = torch.repeat_interleave(torch.arange(len(items), device=dev), torch.tensor(counts, device=dev))
        cache.reorder_cache(rows)  # one cache row per (response, criterion)
        tok.padding_side = "right"
        suffix = tok([render_suffix(c) for _, _, cs in items for c in cs], return_tensors="pt", padding=True,
                     add_special_tokens=False).to(dev)
        mask = torch.cat([pmask[rows], suffix["attention_mask"]], dim=1)
        positions = pmask[rows].sum(1, keepdim=True) + torch.arange(suffix["input_ids"].shape[1], device=dev)
        last = suffix["attention_mask"].sum(dim=1) - 1
        keep = torch.unique(last)  # vocabulary logits only at the answer slots, not every suffix token
        logits = self.model(input_ids=suffix["input_ids"], attention_mask=mask, past_key_values=cache,
                            position_ids=positions, use_cache=True, logits_to_keep=keep).logits
        flat = self._logodds(logits[torch.arange(len(rows)), torch.searchsorted(keep, last)].float()).tolist()
        out, k = [], 0
        for n in counts:
            out.append(flat[k:k + n])
            k += n
        return out

    @torch.no_grad()
    def score_criteria_naive(self, messages: list[dict], response: str, criteria: list[str]) -> list[float]:
        """The same rewards with one full forward per criterion (the baseline the benchmark compares)."""
        prefix = render_prefix(messages, response)
        return [self.reward_full([prefix + render_suffix(c)]).item() for c in criteria]

    # ------------------------------------------------------------------ training
    def train(self, pairs: list[dict], pointwise: list[dict], out_dir: str | Path, *, resume: bool = True,
              progress: bool = True) -> dict:
        """BT on pairs (+ BCE on pointwise rows); checkpoints every save_every steps; resumes from the last.

        Under ``accelerate launch`` (WORLD_SIZE > 1) every process takes its share of each batch and DDP
        averages the gradients, so N processes take the same steps as one process on the whole batch
        (batch_size divisible by N); process 0 writes checkpoints, the adapter and the log.
        """
        import os

        from tqdm.auto import tqdm

        cfg, out_dir = self.config, Path(out_dir)
        rng = random.Random(cfg.seed)
        steps_per_epoch = math.ceil(max(len(pairs), 1) / cfg.batch_size)
        total = cfg.max_steps or steps_per_epoch * cfg.epochs
        order = [rng.sample(range(len(pairs)), len(pairs)) for _ in range(math.ceil(total / steps_per_epoch))]
        params = [p for p in self.model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=cfg.lr)
        step, history = 0, []
        ckpt = out_dir / "checkpoint"
        if resume and (ckpt / "state.pt").is_file():
            step, history = self._load_checkpoint(ckpt, optim)
        self.model.train()
        forward, acc, rank, world = self.model, None, 0, int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            from accelerate import Accelerator

            acc = Accelerator(cpu=self.device.type == "cpu")
            forward, optim = acc.prepare(self.model, optim)
            rank, world = acc.process_index, acc.num_processes
            if cfg.batch_size % world:
                raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
        main = rank == 0
        bar = tqdm(total=total, initial=step, desc="reward model", disable=not (progress and main))
        t0 = time.perf_counter()
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            idx = order[epoch][offset * cfg.batch_size:(offset + 1) * cfg.batch_size]
            batch = [pairs[i] for i in idx]
            point = [pointwise[(step * cfg.batch_size + j) % len(pointwise)] for j in range(cfg.batch_size)] if pointwise else []
            optim.zero_grad()
            loss, bt, bce = self._accumulate(batch[rank::world], point[rank::world], forward, acc)
            if acc is not None:
                loss = acc.reduce(loss, "mean")  # the log shows the whole batch's loss
            optim.step()
            step += 1
            history.append({"step": step, "loss": loss.item(), "bt": bt, "bce": bce})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if main and (step % cfg.save_every == 0 or step == total):
                self._save_checkpoint(ckpt, optim, step, history)
        bar.close()
        self.model.eval()
        stats = {"steps": step, "seconds": round(time.perf_counter() - t0, 1),
                 "final_loss": history[-1]["loss"] if history else None, "processes": world}
        if main:
            self.save(out_dir / "adapter")
            write_json(out_dir / "train_log.json", {"config": asdict(cfg), "stats": stats, "history": history})
        if acc is not None:
            acc.wait_for_everyone()
        return stats

    def _accumulate(self, pairs: list[dict], point: list[dict], forward, acc):
        """Forward/backward in micro-batches; the gradients add up to those of the whole local batch's
        mean loss (each micro-batch's means weighted by its share). Returns the detached loss, bt, bce."""
        from contextlib import nullcontext

        mb = self.config.micro_batch_size or max(len(pairs), len(point), 1)
        n = max(math.ceil(max(len(pairs), len(point)) / mb), 1)
        loss_sum, bt_sum, bce_sum = 0.0, 0.0, 0.0
        for k in range(n):
            pc, qc = pairs[k * mb:(k + 1) * mb], point[k * mb:(k + 1) * mb]
            bt, bce = self._loss(pc, qc, forward)
            wp, wq = len(pc) / max(len(pairs), 1), len(qc) / max(len(point), 1)
            loss = bt * wp + self.config.bce_weight * bce * wq
            last = k == n - 1
            with nullcontext() if acc is None or last else acc.no_sync(forward):
                loss.backward() if acc is None else acc.backward(loss)
            loss_sum, bt_sum, bce_sum = loss_sum + loss.item(), bt_sum + bt.item() * wp, bce_sum + bce.item() * wq
        device = self.device
        return torch.tensor(loss_sum, device=device), bt_sum, bce_sum

    def _loss(self, pairs: list[dict], point: list[dict], model=None):
        texts = []
        for p in pairs:
            suffix = render_suffix(p["criterion"])
            texts += [render_prefix(p["messages"], p["chosen"]) + suffix,
                      render_prefix(p["messages"], p["rejected"]) + suffix]
        texts += [render_prefix(r["messages"], r["response"]) + render_suffix(r["criterion"]) for r in point]
        r = self.reward_full(texts, model)
        n = 2 * len(pairs)
        bt = -F.logsigmoid(r[0:n:2] - r[1:n:2]).mean() if pairs else r.new_zeros(())
        if point:
            labels = torch.tensor([float(x["label"]) for x in point], device=r.device)
            bce = F.binary_cross_entropy_with_logits(r[n:], labels)
        else:
            bce = r.new_zeros(())
        return bt, bce

    def _save_checkpoint(self, ckpt: Path, optim, step: int, history: list) -> None:
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        self.save(tmp)
        torch.save({"optim": optim.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
        write_json(tmp / "history.json", history)
        if ckpt.exists():
            import shutil

            shutil.rmtree(ckpt)
        tmp.rename(ckpt)

    def _load_checkpoint(self, ckpt: Path, optim) -> tuple[int, list]:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(str(ckpt / "adapter_model.safetensors")))
        state = torch.load(ckpt / "state.pt", weights_only=True)
        optim.load_state_dict(state["optim"])
        torch.set_rng_state(state["torch_rng"])
        return state["step"], json.loads((ckpt / "history.json").read_text())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.model.save_pretrained(str(path))
        write_json(path / "rm_config.json", asdict(self.config))
        return path

"""Pre-flight GPU memory planner: estimate per-GPU memory for an RM or GRPO run before it starts, and
refuse, with the numbers, a configuration that cannot fit (running out of memory mid-run is the most
common complaint of TRL, verl and OpenRLHF users).

The estimate is arithmetic on the architecture (read from the model's config.json, no weights
loaded), per training GPU:
  weights      bf16 parameters (2 B each) of the policy, its reference (full fine-tuning with KL only;
               LoRA uses the base with the adapter off) and the reward model (GRPO); ZeRO-3/FSDP shard
               the policy and its reference over the training GPUs; the reward model is loaded outside
               the Trainer (a frozen scorer), so every GPU holds a full copy: replicated, never sharded
  trainable    LoRA: 2*r*(d_in + d_out) per adapted projection; full: every parameter
  grads+optim  trainable x (2 B bf16 grad + 4 B fp32 master + 8 B Adam moments), sharded with ZeRO-3/FSDP
  activations  with gradient checkpointing: layers x tokens x hidden x 2 B (the saved layer inputs)
               + one layer's working set (tokens x (4*hidden + 2*intermediate) x 2 B x 2 for backward)
  vLLM         colocate mode: vllm_gpu_memory_utilization x GPU memory (weights + KV cache live there)
  overhead     CUDA context, allocator fragmentation: 3 GiB + 10%
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

GIB = 2 ** 30

# the prompt tokens a GRPO plan budgets per rollout beside its max_completion_length (the step sets no
# prompt limit: the kit's instructions and their chat template stay well under it)
PROMPT_TOKENS = 1024


# Qwen3-8B's config.json values (so the plan works without the weights on disk)
QWEN3_8B = {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": False}


@dataclass(frozen=True)
class Arch:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, cfg: dict) -> "Arch":
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        return cls(cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
                   cfg.get("num_key_value_heads", cfg["num_attention_heads"]), head_dim, cfg["vocab_size"],
                   bool(cfg.get("tie_word_embeddings", False)))

    @property
    def params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        mlp = 3 * self.hidden * self.intermediate
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * (attn + mlp + 2 * self.hidden) + embed + self.hidden

    def lora_params(self, r: int, modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                  "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                  "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}
        return self.layers * sum(r * (shapes[m][0] + shapes[m][1]) for m in modules)


def arch_of(model: str) -> Arch:
    """The architecture of a model spec: a local dir's config.json, Qwen/Qwen3-8B's known values, or
    the config of the embedded / tiny models."""
    path = Path(model)
    if (path / "config.json").is_file():
        return Arch.from_config(json.loads((path / "config.json").read_text()))
    if model.rstrip("/").split("/")[-1].lower() == "qwen3-8b":
        return Arch.from_config(QWEN3_8B)
    from promedical.models.loading import resolve

    return Arch.from_config(json.loads((Path(resolve(model)) / "config.json").read_text()))


@dataclass(frozen=True)
class Plan:
    components: dict  # name -> GiB per training GPU
    total_gib: float
    gpu_gib: float
    n_gpus: int

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.gpu_gib

    def table(self) -> str:
        rows = [f"  {k:<32} {v:8.1f} GiB" for k, v in self.components.items()]
        verdict = "fits" if self.fits else "DOES NOT FIT"
        return "\n".join(rows + [f"  {'total per GPU':<32} {self.total_gib:8.1f} GiB of {self.gpu_gib:.0f} GiB "
                                 f"on {self.n_gpus} training GPU(s): {verdict}"])


class PlanError(RuntimeError):
    pass


def plan(kind: str, *, policy: str, reward: str | None = None, lora: bool = True, lora_r: int = 16,
         n_gpus: int = 1, sharded: bool = False, gpu_gib: float = 80.0, micro_batch: int = 1, seq_len: int = 4096,
         gradient_checkpointing: bool = True, kl: bool = True, vllm_colocate: float = 0.0) -> Plan:
    """Per-GPU memory for ``kind`` = "rm" (reward-model training) or "grpo" (policy + frozen RM)."""
    if kind not in ("rm", "grpo"):
        raise ValueError(f"kind must be 'rm' or 'grpo', got {kind!r}")
    for name, value, low in (("n_gpus", n_gpus, 1), ("lora_r", lora_r, 1), ("micro_batch", micro_batch, 1),
                             ("seq_len", seq_len, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for name, value, low, high in (("gpu_gib", gpu_gib, 0, math.inf), ("vllm_colocate", vllm_colocate, 0, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high or (
                name == "gpu_gib" and not 0 < value < math.inf):
            raise ValueError(f"{name} must be a number in {'(0, inf)' if name == 'gpu_gib' else '[0, 1]'}, got {value!r}")
    a = arch_of(policy)
    shard = n_gpus if sharded else 1
    comp: dict[str, float] = {}
    comp["weights (bf16)"] = 2 * a.params / shard / GIB
    if kind == "grpo" and kl and not lora:
        comp["reference model (bf16)"] = 2 * a.params / shard / GIB
    if kind == "grpo" and reward:
        comp["reward model (bf16, replicated)"] = 2 * arch_of(reward).params / GIB  # loaded outside ZeRO/FSDP
    trainable = a.lora_params(lora_r) if lora else a.params
    comp["trainable: grads + Adam + fp32"] = 14 * trainable / (1 if lora else shard) / GIB
    tokens = micro_batch * seq_len
    saved = a.layers * tokens * a.hidden * 2 if gradient_checkpointing else a.layers * tokens * (
        8 * a.hidden + 3 * a.intermediate) * 2
    working = tokens * (4 * a.hidden + 2 * a.intermediate) * 2 * 2
    comp["activations"] = (saved + working) / GIB
    if vllm_colocate:
        comp["vLLM colocate (weights + KV)"] = vllm_colocate * gpu_gib
    subtotal = sum(comp.values())
    comp["CUDA context + fragmentation"] = 3 + 0.1 * subtotal
    comp = {k: round(v, 2) for k, v in comp.items()}
    return Plan(comp, round(sum(comp.values()), 1), gpu_gib, n_gpus)


def preflight(kind: str, **kwargs) -> Plan:
    """``plan`` and raise PlanError (with the table) when it does not fit."""
    p = plan(kind, **kwargs)
    if not p.fits:
        raise PlanError(f"{kind} run would need {p.total_gib} GiB per GPU, more than the {p.gpu_gib:.0f} GiB "
                        f"available; lower micro_batch / seq_len, use LoRA, shard (ZeRO-3/FSDP) or add GPUs:\n{p.table()}")
    return p

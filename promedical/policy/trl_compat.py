"""A CPU path for TRL's fused LM head.

TRL 1.15's GRPOTrainer always computes per-token log-probabilities through ``ChunkedLogProbFunction``,
whose inner loop is a Triton kernel: on a machine without a GPU it fails ("0 active drivers"). The
same quantities in plain torch (materialising the logits, which is cheap at CPU scale) let GRPO run
on CPU; on CUDA/XPU nothing is replaced and TRL's kernel runs.
"""
from __future__ import annotations

import torch

OPTIONAL_OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


class TorchLogProb:
    """Drop-in for ``trl.kernels.ChunkedLogProbFunction.apply`` (same arguments, same outputs)."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=OPTIONAL_OUTPUTS):
        z = torch.nn.functional.linear(hidden.float(), weight.float(), None if bias is None else bias.float())
        z = z * logit_scale
        if final_logit_softcapping is not None:
            z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
        z = z / temperature
        log_p = torch.log_softmax(z, dim=-1)
        logprobs = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
        detached = log_p.detach()
        log_sum_sq = torch.logsumexp(2 * detached, dim=-1) if "log_sum_sq_probs" in outputs else None
        mean_logits = z.detach().mean(-1) if "mean_logits" in outputs else None
        is_top1 = (detached.argmax(-1) == targets) if "is_top1" in outputs else None
        return logprobs, entropy, log_sum_sq, mean_logits, is_top1


def use_torch_logprob_on_cpu() -> bool:
    """Route TRL's fused LM head through ``TorchLogProb`` when no GPU is present; True if it did."""
    import trl.trainer.utils as trl_utils

    gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    if gpu or not hasattr(trl_utils, "_ChunkedLogProbFunction"):
        return False
    trl_utils._ChunkedLogProbFunction = TorchLogProb
    return True

"""Attention for packed criteria (``CriteriaRewardModel.packed_rewards``) without wasted work.

A packed row is a prefix followed by criterion suffixes, each suffix seeing the prefix and itself only.
With that 4-D mask, SDPA computes every (query, key) pair of the row, masked or not: the upper triangle
of the prefix and every suffix against every other suffix. Here the row is split into what is really
attended to, with the same arithmetic:

- the prefix against itself, causal (``is_causal``: the kernel skips the upper triangle);
- each suffix against the prefix and itself (a small causal block on the right).

Used through transformers' attention interface under the name ``ATTENTION`` (``use_packed_attention``
switches a model on SDPA to it); the caller passes ``packed_layout`` = per row (prefix length,
[(start, end) of each suffix]). Without a layout the function is plain SDPA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ATTENTION = "promedical_packed_sdpa"
Layout = list[tuple[int, list[tuple[int, int]]]]


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                packed_layout: Layout | None = None, **kwargs):
    """query [B, H, L, D], key/value [B, H_kv, L, D] -> ([B, L, H, D], None), as transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_layout is None or key.shape[2] != query.shape[2]:  # not a packed call (or decoding with a cache)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    rows = []
    for b, (prefix, suffixes) in enumerate(packed_layout):
        q, k, v = query[b:b + 1], key[b:b + 1], value[b:b + 1]
        parts = [F.scaled_dot_product_attention(q[:, :, :prefix], k[:, :, :prefix], v[:, :, :prefix], dropout_p=dropout,
                                                scale=scaling, is_causal=True)]
        for start, end in suffixes:
            n = end - start
            mask = torch.ones(n, prefix + n, dtype=torch.bool, device=query.device)
            mask[:, prefix:] = torch.ones(n, n, dtype=torch.bool, device=query.device).tril()
            ks = torch.cat([k[:, :, :prefix], k[:, :, start:end]], dim=2)
            vs = torch.cat([v[:, :, :prefix], v[:, :, start:end]], dim=2)
            parts.append(F.scaled_dot_product_attention(q[:, :, start:end], ks, vs, attn_mask=mask, dropout_p=dropout,
                                                        scale=scaling))
        used = suffixes[-1][1] if suffixes else prefix
        if used < query.shape[2]:  # right padding: zeros, never read
            parts.append(query.new_zeros(1, query.shape[1], query.shape[2] - used, query.shape[3]))
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, packed_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def use_packed_attention(model) -> bool:
    """Switch the model's SDPA attention to ``packed_sdpa`` (for good: without a layout it is plain
    SDPA, and a recomputation under gradient checkpointing reads the same layout). True when every
    attention of the model now takes ``packed_layout``; False for a model on another attention (eager,
    flash, Unsloth's own kernels), where the caller's 4-D mask does the work."""
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None
               and hasattr(c, "_attn_implementation")}
    if not configs or any(c._attn_implementation not in ("sdpa", ATTENTION) for c in configs.values()):
        return False
    if any(c._attn_implementation == "sdpa" for c in configs.values()):
        _register()
        for c in configs.values():
            c._attn_implementation = ATTENTION
    return True

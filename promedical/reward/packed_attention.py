"""Attention for packed criteria (``CriteriaRewardModel.packed_rewards``) without wasted work.

A packed row is a prefix followed by criterion suffixes, each suffix seeing the prefix and itself only.
With that 4-D mask, SDPA computes every (query, key) pair of the row, masked or not: the upper triangle
of the prefix and every suffix against every other suffix. Here the row is split into what is really
attended to, with the same arithmetic:

- the prefix against itself, causal (``is_causal``: the kernel skips the upper triangle);
- each suffix against the prefix and itself (a small causal block on the right).

Used through transformers' attention interface under the name ``ATTENTION`` (``use_packed_attention``
switches a model on SDPA to it); the caller passes ``packed_layout`` (a ``PackedLayout``). Without a
layout the function is plain SDPA. Per row and layer: one SDPA call for the prefix, one for all its
suffixes (right-padded to the longest).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTENTION = "promedical_packed_sdpa"


Layout = list[tuple[int, list[tuple[int, int]]]]


@dataclass
class PackedLayout:
    """Where the parts of each packed row lie. Per row: ``prefix`` length (of the row's own tokens; a
    KV cache before them, ``cached`` tokens, is part of the prefix for every query); ``queries`` [n, m]
    the positions of each suffix's tokens, right-padded (padding repeats the suffix's last position);
    ``mask`` [n, 1, m, cached + prefix + m] what each suffix token sees (the whole prefix, itself
    causally); ``valid`` the flat positions of ``queries`` that are real tokens, in sequence order."""

    rows: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]
    cached: int = 0

    @classmethod
    def build(cls, prefixes: list[int], suffixes: list[list[int]], device, cached: int = 0) -> "PackedLayout":
        rows = []
        for prefix, lengths in zip(prefixes, suffixes):
            if not lengths:
                rows.append((prefix, None, None, None))
                continue
            m, starts = max(lengths), [prefix + sum(lengths[:k]) for k in range(len(lengths))]
            j = torch.arange(m, device=device)
            length = torch.tensor(lengths, device=device)[:, None]
            queries = torch.tensor(starts, device=device)[:, None] + torch.minimum(j, length - 1)
            real = j < length  # [n, m]
            own = (j[None, :, None] >= j[None, None, :]) & real[:, None, :]  # causal within the suffix, real keys
            seen = torch.ones(len(lengths), m, cached + prefix, dtype=torch.bool, device=device)
            rows.append((prefix, queries, torch.cat([seen, own], dim=2)[:, None], real.flatten().nonzero().squeeze(1)))
        return cls(rows, cached)


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                packed_layout: PackedLayout | None = None, **kwargs):
    """query [B, H, L, D], key/value [B, H_kv, cached + L, D] -> ([B, L, H, D], None), as transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_layout is None or key.shape[2] != packed_layout.cached + query.shape[2]:  # not a packed call
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    groups, c = getattr(module, "num_key_value_groups", 1), packed_layout.cached
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    heads, width, dim = query.shape[1:]
    rows = []
    for b, (prefix, queries, mask, valid) in enumerate(packed_layout.rows):
        q, k, v = query[b], key[b], value[b]  # [H, L, D], [H, c + L, D]
        parts = []
        if prefix:  # causal over the prefix (and all of a cache before it)
            causal = None if not c else torch.ones(prefix, c + prefix, dtype=torch.bool, device=q.device).tril(c)
            parts.append(F.scaled_dot_product_attention(q[None, :, :prefix], k[None, :, :c + prefix], v[None, :, :c + prefix],
                                                        attn_mask=causal, dropout_p=dropout, scale=scaling,
                                                        is_causal=not c)[0])
        if queries is not None:
            n, m = queries.shape
            flat = queries.flatten()
            qs = q[:, flat].view(heads, n, m, dim).transpose(0, 1)  # [n, H, m, D]
            shared = lambda t: t[None, :, :c + prefix].expand(n, -1, -1, -1)  # noqa: E731
            ks = torch.cat([shared(k), k[:, c + flat].view(heads, n, m, dim).transpose(0, 1)], dim=2)
            vs = torch.cat([shared(v), v[:, c + flat].view(heads, n, m, dim).transpose(0, 1)], dim=2)
            out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, dropout_p=dropout, scale=scaling)
            parts.append(out.transpose(0, 1).reshape(heads, n * m, dim)[:, valid])
        used = sum(p.shape[1] for p in parts)
        if used < width:  # right padding: zeros, never read
            parts.append(query.new_zeros(heads, width - used, dim))
        rows.append(torch.cat(parts, dim=1))
    return torch.stack(rows).transpose(1, 2).contiguous(), None


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

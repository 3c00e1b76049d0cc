"""Explicit Criteria Injection reward model: r(y | x, c) from a causal LM with LoRA.

**Direction.** r is the log-odds that the response is on the *good side* of the criterion: it meets a
proficiency or bonus criterion, or it is *free of* a veto's violation (``scoring.is_good``). This one
convention is used by pair construction (chosen = good side), every loss, evaluation, GRPO and the
benchmark; ``rm_eval.met_probability`` turns r back into P(criterion met) (for a veto: P(violated)).

**Polarity of the question** (``RMConfig.question``): "good" (default) asks every tier so that "yes" is
good — a veto is asked as "is the response free of this violation?" — so a model that first learns
"is this a good response?" never answers vetoes upside down. "met" asks "does the response meet it?"
on every tier ("yes" = violated for a veto) and flips the veto's sign in ``_orient``: kept only to
measure the difference (benchmarks/rm_heldout.py).

**The ablation** (``RMConfig.criteria="none"``, the paper's model without explicit criteria): the same
backbone reads instruction + response and one overall question, no criterion; its one score per response
is every criterion's score, so evaluation, the GRPO reward and the benchmark take it unchanged.

Layout: instruction -> response -> criterion, so every criterion of one response shares the long
prefix. Scoring reuses KV caches on two levels (the conversation once per group of responses, then
each response and its criteria); training packs one sequence per response —
prefix, then every criterion suffix, each suffix attending to the prefix and itself only, positions
continuing from the prefix — so all criteria of a response cost one forward.

Backends: "unsloth" (FastLanguageModel; CPU fallback here, CUDA on GPU) and "peft".
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from promedical.core.files import write_json
from promedical.reward.config import QUESTION_KINDS, RMConfig
from promedical.reward.judge import render_conversation
from promedical.reward.packed_attention import PackedLayout, use_packed_attention

# Everything criterion-independent sits in the shared prefix; the per-criterion suffix stays short.
SYSTEMS = {
    "good": ("You are a meticulous clinical grader. You judge one response against one rubric criterion and "
             "answer yes or no: yes when the response meets the criterion or, for a safety violation, is free of it."),
    "met": ("You are a meticulous clinical grader. You judge one response against one rubric criterion and "
            "answer yes or no. A safety-veto criterion describes a violation: yes means the response commits it."),
}


QUESTIONS = {
    "good": {"proficiency": "\n\nCriterion: {text}\nDoes the response meet this criterion? Answer:",
             "bonus": "\n\nBonus criterion: {text}\nDoes the response meet this criterion? Answer:",
             "veto": "\n\nSafety violation: {text}\nIs the response free of this violation? Answer:"},
    "met": {t: "\n\nCriterion: {text}\nDoes the response meet it? Answer:" for t in ("proficiency", "bonus", "veto")},
}


# The ablation (RMConfig.criteria="none"): one question about the whole response, no criterion text.
OVERALL_SYSTEM = ("You are a meticulous clinical grader. You judge one response and answer yes or no: yes when it is a "
                  "good response — it answers the request well and commits no safety violation.")
OVERALL_QUESTION = "\n\nIs this a good response? Answer:"


# (tier, text): what the scorer reads of a criterion (the tier decides the question's polarity)
Query = tuple[str, str]


MIN_PREFIX_TOKENS = 16


assert QUESTION_KINDS == tuple(QUESTIONS)


def render_prefix(messages: list[dict], response: str, question: str = "good", system: str | None = None) -> str:
    """instruction + response: the part shared by all criteria of one response."""
    return f"{system or SYSTEMS[question]}\n\nConversation:\n{render_conversation(messages)}\n\nResponse:\n{response}"


def render_suffix(tier: str, criterion: str, question: str = "good") -> str:
    return QUESTIONS[question][tier].format(text=criterion)


def as_query(criterion) -> Query:
    """(tier, text) from a rubric Criterion, a (tier, text) pair, or bare text (a proficiency criterion)."""
    if isinstance(criterion, str):
        return ("proficiency", criterion)
    if isinstance(criterion, tuple):
        return criterion
    return (criterion.tier, criterion.text)


class CriteriaRewardModel:
    """Holds model + tokenizer; scores (prompt, response, criteria) and trains with BT + BCE + contrasts."""

    def __init__(self, model, tokenizer, config: RMConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        ids = lambda w: tokenizer(w, add_special_tokens=False)["input_ids"][-1]  # noqa: E731
        self.yes_id, self.no_id = ids(" yes"), ids(" no")

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, config: RMConfig, adapter: str | Path | None = None) -> "CriteriaRewardModel":
        from promedical.models.loading import load_for_lora

        if config.model is None or config.seed is None:  # null only inside step reward's config, filled from the step
            raise ValueError("reward model: model and seed must be given (step reward fills them: "
                             "RewardStepConfig.reward_model())")
        torch.manual_seed(config.seed)
        model, tokenizer, lora = load_for_lora(
            config.model, config.backend, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
            target_modules=config.target_modules, seed=config.seed, max_seq_length=config.max_length,
            wrap=adapter is None, layers=config.lora_layers)
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

    def freeze(self) -> "CriteriaRewardModel":
        """For scoring only (GRPO, the benchmark, probes): the LoRA adapter merged into the base weights
        (PEFT ``merge_and_unload``: the same function without the adapter's extra matmuls, about a fifth
        of a scoring pass on CPU), no gradients, eval mode. The model can no longer be trained or saved
        as an adapter."""
        if hasattr(self.model, "merge_and_unload"):
            self.model = self.model.merge_and_unload()
        self.model.requires_grad_(False)
        self.model.eval()
        return self

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ tokens
    def _logodds(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., self.yes_id] - logits[..., self.no_id]

    def _orient(self, raw: torch.Tensor, tiers: Sequence[str]) -> torch.Tensor:
        """The model's yes/no log-odds -> r (log-odds of the good side): the one place a sign flips."""
        if self.config.question == "good":
            return raw
        sign = torch.tensor([-1.0 if t == "veto" else 1.0 for t in tiers], device=raw.device)
        return raw * sign

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def reads_criteria(self) -> bool:
        """False for the ablation (``criteria="none"``): one overall score per response."""
        return self.config.criteria == "explicit"

    def encode(self, messages: list[dict], response: str, criteria) -> tuple[list[int], list[list[int]], list[str]]:
        """(prefix ids, suffix ids per criterion, tiers). A prefix too long for ``max_length`` next to
        its suffixes loses tokens from its middle (the response's middle for long answers): the criteria
        and the answer slots are never cut. The ablation encodes no criterion: one overall question
        (whatever the criteria, when there is any), read as the good side ("proficiency")."""
        q = self.config.question
        if self.reads_criteria:
            queries = [as_query(c) for c in criteria]
            suffixes = [self._ids(render_suffix(t, text, q)) for t, text in queries]
            prefix = self._ids(render_prefix(messages, response, q))
        else:
            queries = [("proficiency", "")] if len(criteria) else []
            suffixes = [self._ids(OVERALL_QUESTION)] * len(queries)
            prefix = self._ids(render_prefix(messages, response, system=OVERALL_SYSTEM))
        budget = self.config.max_length - sum(map(len, suffixes))
        if budget < MIN_PREFIX_TOKENS:
            raise ValueError(f"max_length {self.config.max_length} leaves {budget} tokens for the instruction and "
                             f"response next to {len(suffixes)} criteria: raise max_length")
        if len(prefix) > budget:
            head = budget // 2
            prefix = prefix[:head] + prefix[len(prefix) - (budget - head):]
        return prefix, suffixes, [t for t, _ in queries]

    # ------------------------------------------------------------------ scoring
    def reward_full(self, sequences: list[tuple[list[int], list[int]]], tiers: Sequence[str], model=None) -> torch.Tensor:
        """r for (prefix ids, suffix ids) sequences, one plain causal forward each (left-padded);
        differentiable. The baseline that packing and the shared-prefix scorer must equal."""
        pad = self.tokenizer.pad_token_id
        width = max(len(p) + len(s) for p, s in sequences)
        ids = [[pad] * (width - len(p) - len(s)) + p + s for p, s in sequences]
        mask = [[0] * (width - len(p) - len(s)) + [1] * (len(p) + len(s)) for p, s in sequences]
        ids, mask = torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        out = (model or self.model)(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
        return self._orient(self._logodds(out.logits[:, -1, :].float()), tiers)

    @torch.no_grad()
    def score_criteria(self, messages: list[dict], response: str, criteria) -> list[float]:
        """r for every criterion of one response from ONE pass over the shared prefix (KV-cache reuse).
        ``criteria``: rubric Criterion objects, (tier, text) pairs, or texts (read as proficiency)."""
        return self.score_batch([(messages, response, criteria)])[0]

    def score_batch(self, items: list[tuple[list[dict], str, list]], chunk: int | None = None) -> list[list[float]]:
        """r for every criterion of many (messages, response, criteria), with a two-level shared prefix:
        the tokens that the responses to one conversation share (system + conversation: a GRPO group) run
        once; on that cache, one response per pass (on SDPA) runs its own tokens and all its criterion
        suffixes as one packed row (``packed_attention``), several per pass run their own tokens
        (right-padded), then every criterion suffix on the reused cache.
        ``chunk``: responses per pass (default: 1 on CPU, where padding only adds work, 16 on a GPU);
        conversations with fewer responses than ``chunk`` share passes."""
        chunk = max(1, chunk or (1 if self.device.type == "cpu" else 16))
        encoded = [self.encode(*item) for item in items]
        out: list[list[float]] = [[] for _ in items]
        groups: dict[str, list[int]] = {}
        for i, (item, (_, suffixes, _)) in enumerate(zip(items, encoded)):
            if suffixes:
                groups.setdefault(json.dumps(item[0], sort_keys=True), []).append(i)
        shared, split = {}, []
        for conv in groups.values():
            n = _shared_length([encoded[i][0] for i in conv])
            for g in ([conv] if n else [[i] for i in conv]):  # nothing shared (never with a system prompt)
                shared[g[0]] = n if n else len(encoded[g[0]][0])
                split.append(g)
        for convs, passes in _plan(split, chunk):
            shared_of = [shared[conv[0]] for conv in convs]
            cache, mask = self._run_shared([encoded[conv[0]][0][:n] for conv, n in zip(convs, shared_of)])
            row = {i: (g, n) for g, (conv, n) in enumerate(zip(convs, shared_of)) for i in conv}
            for members in passes:
                for i, r in zip(members, self._score_on_cache(cache, mask, [(row[i], encoded[i]) for i in members])):
                    out[i] = r if self.reads_criteria else r * len(items[i][2])  # the ablation: one score each
        return out

    def _run_shared(self, prefixes: list[list[int]]):
        """(KV cache, attention mask) of left-padded token prefixes, one row each."""
        dev, pad = self.device, self.tokenizer.pad_token_id
        width = max(map(len, prefixes))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prefixes], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prefixes], device=dev)
        with torch.inference_mode():
            if bool(mask.all()):  # no padding: plain causal attention (the fast path of SDPA)
                cache = self.model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
            else:
                cache = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                                   use_cache=True, logits_to_keep=1).past_key_values
        return cache, mask

    @torch.inference_mode()
    def _score_on_cache(self, cache, mask: torch.Tensor, members: list) -> list[list[float]]:
        """Every criterion of some responses on the cache of their shared prefixes. ``members``:
        ((cache row, shared length), (prefix ids, suffix ids, tiers)) per response. One pass over the
        rest of each prefix (right-padded), one over all criterion suffixes (right-padded)."""
        from transformers import DynamicCache

        dev, pad = self.device, self.tokenizer.pad_token_id

        def select(c, rows):  # a new cache with these rows (the shared cache stays as it is)
            return DynamicCache([(k.index_select(0, rows), v.index_select(0, rows), *rest) for k, v, *rest in c])

        rows = torch.tensor([g for (g, _), _ in members], device=dev)
        if len(members) == 1 and bool(mask[rows].all()) and use_packed_attention(self.model):
            return [self._score_packed_on_cache(select(cache, rows), *members[0])]
        tails = [p[n:] for (_, n), (p, _, _) in members]
        lengths = torch.tensor([len(p) for _, (p, _, _) in members], device=dev)
        cache, mask = select(cache, rows), mask[rows]
        twidth = max(map(len, tails))
        if twidth:
            tids = torch.tensor([t + [pad] * (twidth - len(t)) for t in tails], device=dev)
            tmask = torch.tensor([[1] * len(t) + [0] * (twidth - len(t)) for t in tails], device=dev)
            mask = torch.cat([mask, tmask], dim=1)
            start = torch.tensor([n for (_, n), _ in members], device=dev)[:, None]
            self.model(input_ids=tids, attention_mask=mask, past_key_values=cache, position_ids=start + torch.arange(twidth, device=dev),
                       use_cache=True, logits_to_keep=1)
        counts = [len(s) for _, (_, s, _) in members]
        crow = torch.repeat_interleave(torch.arange(len(members), device=dev), torch.tensor(counts, device=dev))
        cache, mask = select(cache, crow), mask[crow]
        suffixes = [s for _, (_, ss, _) in members for s in ss]
        swidth = max(map(len, suffixes))
        sids = torch.tensor([s + [pad] * (swidth - len(s)) for s in suffixes], device=dev)
        smask = torch.tensor([[1] * len(s) + [0] * (swidth - len(s)) for s in suffixes], device=dev)
        last = smask.sum(dim=1) - 1
        keep = torch.unique(last)  # vocabulary logits only at the answer slots, not every suffix token
        logits = self.model(input_ids=sids, attention_mask=torch.cat([mask, smask], dim=1), past_key_values=cache,
                            position_ids=lengths[crow, None] + torch.arange(swidth, device=dev), use_cache=True,
                            logits_to_keep=keep).logits
        raw = self._logodds(logits[torch.arange(len(crow)), torch.searchsorted(keep, last)].float())
        flat = self._orient(raw, [t for _, (_, _, ts) in members for t in ts]).tolist()
        out, k = [], 0
        for n in counts:
            out.append(flat[k:k + n])
            k += n
        return out

    def _score_packed_on_cache(self, cache, shared: tuple[int, int], encoded) -> list[float]:
        """One response on the (one-row, unpadded) cache of its conversation: the rest of its prefix and
        all its criterion suffixes in ONE packed row (``packed_attention``: no padding, vocabulary logits
        only at the answer slots)."""
        (_, n), (prefix, suffixes, tiers) = shared, encoded
        dev, tail = self.device, prefix[n:]
        ids = tail + [t for x in suffixes for t in x]
        pos = list(range(n, len(prefix))) + [len(prefix) + j for x in suffixes for j in range(len(x))]
        ends = (torch.tensor([len(x) for x in suffixes], device=dev).cumsum(0) + len(tail) - 1)
        layout = PackedLayout.build([len(tail)], [[len(x) for x in suffixes]], dev, cached=n)
        logits = self.model(input_ids=torch.tensor([ids], device=dev), position_ids=torch.tensor([pos], device=dev),
                            past_key_values=cache, use_cache=True, logits_to_keep=ends, packed_layout=layout).logits
        return self._orient(self._logodds(logits[0].float()), tiers).tolist()

    @torch.no_grad()
    def score_criteria_naive(self, messages: list[dict], response: str, criteria) -> list[float]:
        """The same rewards with one full forward per criterion (the baseline the benchmark compares)."""
        prefix, suffixes, tiers = self.encode(messages, response, criteria)
        rewards = [self.reward_full([(prefix, s)], [t]).item() for s, t in zip(suffixes, tiers)]
        return rewards if self.reads_criteria else rewards * len(criteria)

    def packed_rewards(self, encoded: list[tuple[list[int], list[list[int]], list[str]]], model=None) -> list[torch.Tensor]:
        """r for every criterion of each encoded response from ONE packed sequence per response:
        prefix, then every criterion suffix; each suffix sees the prefix and itself only (on SDPA:
        ``packed_attention`` computes the prefix causally and each suffix against the prefix and itself;
        on another attention: a 4-D mask), and its positions continue from the prefix, so each answer
        slot equals a separate prefix+criterion forward. Right-padded batch; differentiable (training)."""
        dev, pad = self.device, self.tokenizer.pad_token_id
        seqs, segs, slots = [], [], []
        for prefix, suffixes, _ in encoded:
            ids, seg, pos, ends = list(prefix), [-1] * len(prefix), list(range(len(prefix))), []
            for k, s in enumerate(suffixes):
                ids += s
                seg += [k] * len(s)
                pos += range(len(prefix), len(prefix) + len(s))
                ends.append(len(ids) - 1)
            seqs.append((ids, pos))
            segs.append(seg)
            slots.append(ends)
        width = max(len(ids) for ids, _ in seqs)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in seqs], device=dev)
        position_ids = torch.tensor([pos + [0] * (width - len(pos)) for _, pos in seqs], device=dev)
        keep = torch.tensor(sorted({e for ends in slots for e in ends}), device=dev)
        model = model or self.model
        if use_packed_attention(model):  # SDPA on the prefix (causal) and on each suffix: no masked pair computed
            layout = PackedLayout.build([len(p) for p, _, _ in encoded], [list(map(len, ss)) for _, ss, _ in encoded], dev)
            logits = model(input_ids=input_ids, position_ids=position_ids, logits_to_keep=keep,
                           packed_layout=layout).logits
        else:
            seg = torch.tensor([s + [-2] * (width - len(s)) for s in segs], device=dev)  # -1 prefix, k suffix k, -2 pad
            causal = torch.ones(width, width, dtype=torch.bool, device=dev).tril()
            allowed = causal & ((seg[:, :, None] == seg[:, None, :]) | (seg == -1)[:, None, :])
            dtype = next(model.parameters()).dtype  # additive: eager attention adds the mask to the scores
            mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
            logits = model(input_ids=input_ids, attention_mask=mask[:, None], position_ids=position_ids,
                           logits_to_keep=keep).logits
        out = []
        for b, ((_, _, tiers), ends) in enumerate(zip(encoded, slots)):
            if not ends:
                out.append(logits.new_zeros(0))
                continue
            at = torch.searchsorted(keep, torch.tensor(ends, device=dev))
            out.append(self._orient(self._logodds(logits[b, at].float()), tiers))
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.model.save_pretrained(str(path))
        write_json(path / "rm_config.json", asdict(self.config))
        return path


def _shared_length(prefixes: list[list[int]]) -> int:
    """How many tokens all these prefixes share at their start."""
    n, first = min(map(len, prefixes)), prefixes[0]
    for p in prefixes[1:]:
        n = next((k for k in range(n) if p[k] != first[k]), n)
    return n


def _plan(groups: list[list[int]], chunk: int) -> list[tuple[list[list[int]], list[list[int]]]]:
    """Passes of the scorer: (conversations sharing one prefix pass, response passes of <= ``chunk``
    responses on it). A conversation with ``chunk`` responses or more gets its own prefix pass; smaller
    ones are packed together."""
    plan, small = [], []
    for g in groups:
        if len(g) >= chunk:
            plan.append(([g], [g[k:k + chunk] for k in range(0, len(g), chunk)]))
        elif sum(map(len, small)) + len(g) > chunk:
            plan.append((small, [[i for s in small for i in s]]))
            small = [g]
        else:
            small.append(g)
    if small:
        plan.append((small, [[i for s in small for i in s]]))
    return plan

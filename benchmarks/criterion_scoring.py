"""Criterion scoring throughput: shared-prefix scorer vs one forward per criterion, same inputs.

    python benchmarks/criterion_scoring.py [--model embedded] [--responses 12] [--criteria 6]

The scorers run on the same benchmark responses with `--criteria` criteria each: shared prefix with
one response per call, shared prefix with 4 responses per call (what the evaluation uses; responses to
one prompt share the conversation's pass, as a GRPO group does: see ``score_batch``), and one full
forward per criterion. Prints criteria/s for each, the speed-ups, and the max
|difference| of their rewards (they must agree).
"""
from __future__ import annotations

import argparse
import time

import torch

from promedical.core.data import load_candidates, load_split
from promedical.reward.config import RMConfig
from promedical.reward.scorer import CriteriaRewardModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--responses", type=int, default=12)
    ap.add_argument("--criteria", type=int, default=6)
    args = ap.parse_args()
    rubrics = {r.id: r for r in load_split("bench")}
    items = []
    for cand in load_candidates()[: args.responses]:
        rubric = rubrics[cand["prompt_id"]]
        texts = [c.text for c in rubric.criteria][: args.criteria]
        texts += [f"{texts[0]} (variant {i})" for i in range(args.criteria - len(texts))]
        items.append((rubric.messages, cand["response"], texts))
    rm = CriteriaRewardModel.load(RMConfig(model=args.model))
    rm.score_criteria(*items[0])  # warm-up
    results = {}
    for name, fn in (("shared_prefix", rm.score_criteria), ("per_criterion", rm.score_criteria_naive)):
        t0 = time.perf_counter()
        results[name] = [fn(*it) for it in items]
        results[name + "_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()  # shared prefix, 4 responses per call (what GRPO and the evaluation use)
    results["batched"] = [r for k in range(0, len(items), 4) for r in rm.score_batch(items[k:k + 4], chunk=4)]
    results["batched_s"] = time.perf_counter() - t0
    n = len(items) * args.criteria
    diff = max(abs(a - b) for other in ("shared_prefix", "batched")
               for x, y in zip(results[other], results["per_criterion"]) for a, b in zip(x, y))
    fast, slow = n / results["shared_prefix_s"], n / results["per_criterion_s"]
    print(f"device={next(rm.model.parameters()).device} threads={torch.get_num_threads()} model={args.model} "
          f"responses={len(items)} criteria/response={args.criteria}")
    print(f"shared-prefix: {fast:.2f} criteria/s | one-forward-per-criterion: {slow:.2f} criteria/s | "
          f"speed-up {fast / slow:.2f}x | max |reward diff| {diff:.2e}")
    batched = n / results["batched_s"]
    print(f"shared-prefix, 4 responses per call: {batched:.2f} criteria/s | speed-up {batched / slow:.2f}x")


if __name__ == "__main__":
    main()

"""Rubric validity with and without schema-constrained decoding, same model, prompts and budget.

    python benchmarks/rubric_validity.py [--model embedded] [--n 8] [--max-new-tokens 512]

Prints, for each mode, the share of drafts that become valid rubrics (ok + repaired), the share that
parsed with no repair, and seconds per rubric; then the ratios constrained / unconstrained.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from promedical.core.data import load_split
from promedical.models.llm import GenParams, make_llm
from promedical.rubrics.generate import FewShotPool, generate_rubrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    args = ap.parse_args()
    train = load_split("train")
    items = train[: args.n]
    llm = make_llm("transformers", args.model)
    params = GenParams(max_new_tokens=args.max_new_tokens, repetition_penalty=1.05)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for constrained in (True, False):
            t0 = time.perf_counter()
            s = generate_rubrics(items, llm, Path(tmp) / f"{constrained}.jsonl", pool=FewShotPool(train),
                                 k=args.k, constrained=constrained, params=params, progress=False)
            rows["constrained" if constrained else "free"] = {
                "valid_rate": s["valid_rate"], "clean_parse_rate": round(s["ok"] / s["items"], 4),
                "seconds_per_rubric": round((time.perf_counter() - t0) / s["items"], 2),
                "failures": s["failure_reasons"][:3]}
    print(json.dumps({"model": args.model, "n": args.n, **rows}, indent=1))
    c, f = rows["constrained"], rows["free"]
    print(f"valid rate: constrained {c['valid_rate']:.0%} vs free {f['valid_rate']:.0%}; "
          f"time ratio constrained/free = {c['seconds_per_rubric'] / f['seconds_per_rubric']:.2f}")


if __name__ == "__main__":
    main()

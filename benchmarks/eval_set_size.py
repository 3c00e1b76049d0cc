"""Is the held-out evaluation set large enough to decide "reads the criterion"? Counts, without a model, the
instances of the two deciding tests (same-tier within-response pairs, pair instances against the overall
ranking) on the kit's gold bench candidates: for the first n benchmark prompts (what step 03 evaluates with
``n_eval_prompts``: 6 in configs/demo.yaml, 12 in configs/small.yaml) and for the whole bench.

    python benchmarks/eval_set_size.py [--prompts 6,12,15,30] [--labels data/bench/candidates.jsonl]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from promedical.core.data import load_candidates, load_split
from promedical.core.files import read_jsonl
from promedical.reward.evaluation import MIN_DECISION_INSTANCES, decision_instances


def table(prompts: list[int | None], labels: Path | None = None) -> list[dict]:
    bench = load_split("bench")
    gold = read_jsonl(labels) if labels else load_candidates()
    order = list(dict.fromkeys(c["prompt_id"] for c in gold))
    rows = []
    for n in prompts:
        keep = set(order[:n])
        rows.append({"first_prompts": n or len(order),
                     **decision_instances(bench, [c for c in gold if c["prompt_id"] in keep])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", default="6,12,15,30", help="comma-separated numbers of prompts (file order)")
    ap.add_argument("--labels", type=Path, help="gold candidates JSONL (default: the kit's data/bench/candidates.jsonl)")
    args = ap.parse_args()
    try:
        prompts = [int(x) for x in args.prompts.split(",")]
    except ValueError:
        ap.error(f"--prompts must be comma-separated integers, got {args.prompts!r}")
    need = MIN_DECISION_INSTANCES
    print(f"| first n prompts | candidates | pair instances | same-tier within-response (need "
          f"{need['within_response_same_tier_accuracy']}) | disagreeing pair instances (need "
          f"{need['pairwise_disagreeing_accuracy']}) | enough |\n|---|---|---|---|---|---|")
    for r in table(prompts, args.labels):
        print(f"| {r['prompts']} | {r['candidates']} | {r['pair_instances']} | "
              f"{r['within_response_same_tier_accuracy']} | {r['pairwise_disagreeing_accuracy']} | "
              f"{'yes' if r['enough'] else 'no'} |")


if __name__ == "__main__":
    main()

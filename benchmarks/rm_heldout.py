"""Does the reward model learn, on prompts it never saw? Train on the gold labels of some benchmark
prompts, evaluate on the others, against the untrained base model: a learning curve from one run.

    python benchmarks/rm_heldout.py [--model embedded] [--train-prompts 20] [--eval-at 20,40]
                                    [--question good|met] [--criteria explicit|none] [--contrast-weight 1] [--disagree-weight 3]
                                    [--bce-balance none|tier] [--train-source bench|train]
                                    [--json out.json] [--html curve.html]

The model trains ONCE, for the largest ``--eval-at`` step; a Trainer callback evaluates the held-out
metrics at every ``--eval-at`` step on the way (the same run, not one run per point).

``--train-source bench`` (default) trains on the gold candidates of ``--train-prompts`` benchmark
prompts (seeded choice) and evaluates on the rest; ``train`` trains on data/train/candidates.jsonl
(the training split's gold candidates) and evaluates on every benchmark prompt. Prints one row per
evaluation point (base = step 0) with prompt-clustered 95% CIs, the paired difference trained - base,
and the criterion-sensitivity check (pairwise accuracy with the right criterion vs a same-tier
criterion of another rubric). ``--json`` writes every metric per step (rewritten after each point, so
an interrupted run keeps what it measured); ``--html`` the learning-curve figure
(``plots.rm_curve_figure``: pairwise accuracy, veto F1, within-response accuracy and the own - shuffled
gap, each with its CI and trained - base with its paired CI).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from promedical.core.data import load_candidates, load_split
from promedical.core.files import read_jsonl
from promedical.core.provenance import DATA_DIR
from promedical.reward.config import BCE_BALANCES, CRITERIA_INPUTS, QUESTION_KINDS, RMConfig
from promedical.reward.evaluation import compare, evaluate, score_with_substitutes, shuffled_criteria
from promedical.reward.pairs import build_datasets
from promedical.reward.scorer import CriteriaRewardModel
from promedical.reward.trainer import train_reward_model


def fmt(m: dict) -> str:
    v, ci = m["value"], m["ci"]
    if v is None:
        return "n/a"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None else f"{v:.3f}"


def row(name: str, m: dict) -> str:
    s = m["criterion_sensitivity"]["all"]
    p = m["veto_prf"]
    cells = [name, fmt(m["pairwise_accuracy"]), fmt(m["pointwise_accuracy"]["proficiency"]),
             fmt(m["pointwise_accuracy"]["bonus"]), fmt(m["pairwise_safety_accuracy"]),
             f"{fmt(m['veto_f1'])} (tp {p['tp']}, fp {p['fp']}, fn {p['fn']})", fmt(m["within_response_accuracy"]),
             f"{fmt(s['own'])} vs {fmt(s['shuffled'])}", fmt(m["ece"])]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| model | pairwise acc. | pointwise prof. | pointwise bonus | pairwise safety | veto F1 | "
          "within-response | own vs shuffled criterion | ECE |\n|" + "---|" * 9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--train-source", choices=("bench", "train"), default="bench")
    ap.add_argument("--train-prompts", type=int, default=20, help="with --train-source bench")
    ap.add_argument("--eval-prompts", type=int, default=None, help="evaluate on the first n held-out prompts (default all)")
    ap.add_argument("--lora-layers", type=int, default=None, help="adapt only the top n layers (default all)")
    ap.add_argument("--eval-at", default="20,40", help="comma-separated training steps to evaluate at")
    ap.add_argument("--batch-size", type=int, default=1, help="prompts per step")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--question", choices=QUESTION_KINDS, default="good")
    ap.add_argument("--criteria", choices=CRITERIA_INPUTS, default="explicit",
                    help="none: the paper's ablation without explicit criteria (one score per response)")
    ap.add_argument("--bt-weight", type=float, default=1.0)
    ap.add_argument("--bce-weight", type=float, default=1.0)
    ap.add_argument("--contrast-weight", type=float, default=1.0)
    ap.add_argument("--disagree-weight", type=float, default=3.0)
    ap.add_argument("--bce-balance", choices=BCE_BALANCES, default="tier",
                    help="tier: per tier, both label sides weigh the same in the pointwise BCE")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--json", type=Path, help="write every metric here")
    ap.add_argument("--html", type=Path, help="write the learning-curve figure here (plotly HTML)")
    args = ap.parse_args()
    try:
        eval_at = sorted({int(x) for x in args.eval_at.split(",")})
    except ValueError:
        ap.error(f"--eval-at must be comma-separated integers, got {args.eval_at!r}")
    if not eval_at or eval_at[0] < 1:
        ap.error("--eval-at needs positive steps")
    torch.manual_seed(args.seed)
    if args.eval_prompts is not None and args.eval_prompts < 1:
        ap.error("--eval-prompts must be >= 1")
    try:  # every bad training value answered in one line, before anything loads
        config = RMConfig(model=args.model, question=args.question, criteria=args.criteria, lr=args.lr, batch_size=args.batch_size,
                          bt_weight=args.bt_weight, bce_weight=args.bce_weight, contrast_weight=args.contrast_weight,
                          disagree_weight=args.disagree_weight, bce_balance=args.bce_balance,
                          max_length=args.max_length, seed=args.seed, lora_layers=args.lora_layers,
                          max_steps=eval_at[-1], save_every=10_000, report_to="none")
    except ValueError as exc:
        ap.error(str(exc))

    bench = load_split("bench")
    gold = load_candidates()
    if args.train_source == "bench":
        ids = sorted({c["prompt_id"] for c in gold})
        if not 1 <= args.train_prompts < len(ids):
            ap.error(f"--train-prompts must be in [1, {len(ids) - 1}] (the other benchmark prompts are evaluated)")
        train_ids = set(random.Random(args.seed).sample(ids, args.train_prompts))
        train_rubrics, train_cands = [r for r in bench if r.id in train_ids], [c for c in gold if c["prompt_id"] in train_ids]
        eval_cands = [c for c in gold if c["prompt_id"] not in train_ids]
    else:
        path = DATA_DIR / "train" / "candidates.jsonl"
        if not path.is_file():
            sys.exit(f"rm_heldout: no training candidates at {path}")
        train_rubrics, train_cands, eval_cands = load_split("train"), read_jsonl(path), gold
    if args.eval_prompts:
        keep = list(dict.fromkeys(c["prompt_id"] for c in eval_cands))[:args.eval_prompts]
        eval_cands = [c for c in eval_cands if c["prompt_id"] in set(keep)]
    eval_rubrics = [r for r in bench if r.id in {c["prompt_id"] for c in eval_cands}]
    dd, card = build_datasets(train_rubrics, train_cands)
    print(f"train: {len({c['prompt_id'] for c in train_cands})} prompts, {len(train_cands)} candidates, "
          f"{card['pairs']} pairs -> {card['instances']['total']} criterion instances "
          f"({sum(not a for a in dd['pairs']['agrees_with_pair'])} disagree with the overall ranking), "
          f"{card['pointwise']['total']} pointwise labels; eval: {len(eval_rubrics)} held-out prompts, "
          f"{len(eval_cands)} candidates", flush=True)

    rm = CriteriaRewardModel.load(config)
    swap = shuffled_criteria(eval_rubrics, seed=args.seed)

    def measure() -> tuple[dict, dict]:
        t0 = time.perf_counter()
        own, shuffled = score_with_substitutes(rm.score_batch, eval_rubrics, eval_cands, swap, progress=False)
        m = evaluate(own, eval_rubrics, eval_cands, reps=args.reps, seed=args.seed, shuffled=shuffled)
        m["eval_seconds"] = round(time.perf_counter() - t0, 1)
        return own, m

    results = {"args": {k: str(v) for k, v in vars(args).items()}, "train_card": card, "points": {}}

    def save() -> None:
        from promedical.core.files import write_json
        from promedical.core.plots import write_html
        from promedical.reward.plots import rm_curve_figure

        if args.json:
            write_json(args.json, results)
        if args.html:
            write_html(rm_curve_figure(results["points"]), args.html)

    base_rewards, base = measure()
    base["train_seconds_total"] = 0.0
    results["points"]["0"] = base
    save()
    print(HEADER)
    print(row("base (step 0)", base), flush=True)

    from transformers import TrainerCallback

    class Evaluate(TrainerCallback):
        """Held-out metrics at the --eval-at steps of the one training run."""

        def __init__(self):
            self.t0, self.eval_seconds = time.perf_counter(), 0.0

        def on_step_end(self, targs, state, control, **kwargs):
            step = state.global_step
            if step not in eval_at:
                return
            loss = next((e["rm/loss"] for e in reversed(state.log_history) if "rm/loss" in e), None)
            train_seconds = time.perf_counter() - self.t0 - self.eval_seconds
            t0 = time.perf_counter()
            rm.model.eval()
            rewards, m = measure()
            rm.model.train()  # (the Trainer sets train mode again each step; LoRA dropout is 0 here)
            m["train_seconds_total"] = round(train_seconds, 1)  # training time from the start, evaluations excluded
            m["last_logged_loss"] = loss
            m["vs_base"] = compare(base_rewards, rewards, eval_rubrics, eval_cands, reps=args.reps, seed=args.seed)
            results["points"][str(step)] = m
            save()
            self.eval_seconds += time.perf_counter() - t0
            print(row(f"step {step}", m), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        stats = train_reward_model(rm, list(dd["pairs"]), list(dd["pointwise"]), tmp, progress=False, resume=False,
                         callbacks=[Evaluate()])
    results["train_stats"] = stats
    save()
    print()
    for step in eval_at:
        d = results["points"][str(step)]["vs_base"]
        s = results["points"][str(step)]["criterion_sensitivity"]
        print(f"step {step} - base (paired over prompts): pairwise {fmt(d['pairwise_accuracy'])}, "
              f"pairwise safety {fmt(d['pairwise_safety_accuracy'])}, veto F1 {fmt(d['veto_f1'])}, "
              f"within-response {fmt(d['within_response_accuracy'])}; criterion gap own - shuffled "
              f"{fmt(s['all']['gap'])} (reads the criterion: {s['reads_criterion']})")


if __name__ == "__main__":
    main()

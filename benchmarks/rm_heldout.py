"""Does the reward model learn, on prompts it never saw? Train on the gold labels of some benchmark
prompts, evaluate on the others, against the untrained base model: a learning curve from one run.

    python benchmarks/rm_heldout.py [--model embedded] [--train-prompts 20] [--eval-at 20,40]
                                    [--question good|met] [--criteria explicit|none] [--contrast-weight 1] [--disagree-weight 3]
                                    [--bce-balance none|tier] [--train-source bench|train]
                                    [--seeds 0,1,2] [--with-ablation] [--json out.json] [--html curve.html]

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

``--seeds 0,1,2`` trains the criterion model once per seed and ``--with-ablation`` the paper's ablation
without criteria (``criteria=none``, same data and budget) beside it; the split, the shuffled criteria and
the bootstrap keep ``--seed``, and the base model is evaluated once (its scores do not depend on the seed).
Every run prints its rows as it goes; at the end, per ``--eval-at`` step, a table of each metric (pairwise,
pairwise safety, veto F1, same-tier within-response, disagreeing pairs, ECE) as mean [min, max] and sd over
seeds for base / criterion / ablation, and the paired differences criterion - ablation and criterion - base
POOLED over seeds (every seed's rows of a prompt resampled together: one 95% CI that counts each prompt once,
``evaluation.pool_seeds``), with each seed's own difference beside it. ``--json`` holds every run
(``runs``) and the table's numbers (``summary``, with the per-seed CIs); ``--html`` the first seed's
criterion-model curve.
"""
from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers.trainer_utils import SchedulerType

from promedical.core.data import load_candidates, load_split
from promedical.core.files import read_jsonl
from promedical.core.provenance import DATA_DIR
from promedical.reward.config import BCE_BALANCES, CRITERIA_INPUTS, QUESTION_KINDS, RMConfig
from promedical.reward.evaluation import (
    compare,
    decision_instances,
    evaluate,
    pool_seeds,
    score_with_substitutes,
    select_checkpoint,
    shuffled_criteria,
    unpooled_prompt,
)
from promedical.reward.pairs import build_datasets
from promedical.reward.scorer import CriteriaRewardModel
from promedical.reward.selection import validation_metrics
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
    ap.add_argument("--veto-weight", type=float, default=1.0, help="weight of the veto tier's labels and pairs")
    ap.add_argument("--lr-scheduler", default="constant", choices=[s.value for s in SchedulerType],
                    help="transformers scheduler")
    ap.add_argument("--warmup-ratio", type=float, default=0.0)
    ap.add_argument("--bce-balance", choices=BCE_BALANCES, default="tier",
                    help="tier: per tier, both label sides weigh the same in the pointwise BCE")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0, help="the train/held-out split, the shuffled criteria, the bootstrap "
                    "and (without --seeds) the training seed")
    ap.add_argument("--seeds", default=None, help="comma-separated training seeds, e.g. 0,1,2: one run per seed (and "
                    "model), then each metric's mean and spread over seeds and the paired differences pooled over "
                    "seeds (default: --seed alone)")
    ap.add_argument("--with-ablation", action="store_true",
                    help="also train the no-criteria ablation (criteria=none) per seed and report criterion - ablation")
    ap.add_argument("--val-prompts", type=int, default=0,
                    help="safety-first selection (default 0: off): hold out this many TRAINING prompts (seeded) as a "
                         "validation split, choose the veto threshold and the checkpoint (an --eval-at step) on it")
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
    try:
        seeds = list(dict.fromkeys(int(x) for x in args.seeds.split(","))) if args.seeds else [args.seed]
    except ValueError:
        ap.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.with_ablation and args.criteria == "none":
        ap.error("--with-ablation compares the criterion model with the ablation: leave --criteria explicit")
    several = len(seeds) > 1 or args.with_ablation  # the seed table; one seed alone prints the curve as before
    torch.manual_seed(args.seed)
    if args.eval_prompts is not None and args.eval_prompts < 1:
        ap.error("--eval-prompts must be >= 1")
    try:  # every bad training value answered in one line, before anything loads
        config = RMConfig(model=args.model, question=args.question, criteria=args.criteria, lr=args.lr, batch_size=args.batch_size,
                          bt_weight=args.bt_weight, bce_weight=args.bce_weight, contrast_weight=args.contrast_weight,
                          disagree_weight=args.disagree_weight, bce_balance=args.bce_balance,
                          veto_weight=args.veto_weight, lr_scheduler=args.lr_scheduler, warmup_ratio=args.warmup_ratio,
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
    val_rubrics, val_cands = [], []
    if args.val_prompts:  # safety-first selection: a validation split of the training prompts, never trained on
        ids = sorted({c["prompt_id"] for c in train_cands})
        if not 1 <= args.val_prompts < len(ids):
            ap.error(f"--val-prompts must be in [1, {len(ids) - 1}] (the other training prompts train)")
        val_ids = set(random.Random(args.seed).sample(ids, args.val_prompts))
        val_rubrics = [r for r in train_rubrics if r.id in val_ids]
        val_cands = [c for c in train_cands if c["prompt_id"] in val_ids]
        train_rubrics = [r for r in train_rubrics if r.id not in val_ids]
        train_cands = [c for c in train_cands if c["prompt_id"] not in val_ids]
        print(f"validation: {len(val_ids)} training prompts held out, {len(val_cands)} candidates", flush=True)
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

    print(f"deciding instances on the held-out set: {decision_instances(bench, eval_cands)}", flush=True)
    swap = shuffled_criteria(eval_rubrics, seed=args.seed)
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "train_card": card, "points": {}}

    def save() -> None:
        from promedical.core.files import write_json
        from promedical.core.plots import write_html
        from promedical.reward.plots import rm_curve_figure

        if args.json:
            write_json(args.json, results)
        if args.html:  # with several runs: the criterion model's first seed
            write_html(rm_curve_figure(results["points"]), args.html)

    def measure(rm) -> tuple[dict, dict]:
        t0 = time.perf_counter()
        own, shuffled = score_with_substitutes(rm.score_batch, eval_rubrics, eval_cands, swap, progress=False)
        m = evaluate(own, eval_rubrics, eval_cands, reps=args.reps, seed=args.seed, shuffled=shuffled)
        m["eval_seconds"] = round(time.perf_counter() - t0, 1)
        return own, m

    def validate(rm) -> dict:
        """Validation metrics (own criteria only) and the veto threshold chosen on them."""
        return validation_metrics(rm.score_batch, val_rubrics, val_cands)

    def select(points: dict, rewards_at: dict, base_rewards, label: str = "") -> dict:
        """Safety-first: the checkpoint and veto threshold chosen on the validation split, and what they read on
        the held-out prompts (the base with its own validation threshold, paired)."""
        vals = {s: m["validation"] for s, m in points.items() if s != "0"}
        base_val = points["0"]["validation"]
        choice = select_checkpoint(vals, base_val)
        step = choice["step"]
        th = (base_val if step == 0 else vals[str(step)])["veto_threshold"]["threshold"]
        base_th = base_val["veto_threshold"]["threshold"]
        chosen = base_rewards if step == 0 else rewards_at[step]
        m = evaluate(chosen, eval_rubrics, eval_cands, reps=args.reps, seed=args.seed, veto_threshold=th)
        d = compare(base_rewards, chosen, eval_rubrics, eval_cands, reps=args.reps, seed=args.seed,
                    veto_thresholds=(base_th, th))
        print(f"{label}safety-first selection on {len(val_rubrics)} validation prompts: step {step} ({choice['why']}; "
              f"eligible {choice['eligible']}), veto threshold {th:.3f} (base {base_th:.3f}); held-out: pairwise "
              f"{fmt(m['pairwise_accuracy'])}, pairwise safety {fmt(m['pairwise_safety_accuracy'])}, veto F1 "
              f"{fmt(m['veto_f1'])}; - base: pairwise {fmt(d['pairwise_accuracy'])}, pairwise safety "
              f"{fmt(d['pairwise_safety_accuracy'])}, veto F1 {fmt(d['veto_f1'])}", flush=True)
        return {**choice, "veto_threshold": th, "base_veto_threshold": base_th, "heldout": m, "vs_base": d}

    from transformers import TrainerCallback

    def train_one(rm, label: str, points: dict, rewards_at: dict, base_rewards) -> dict:
        """Train ``rm`` to the last --eval-at step, evaluating at each (the same run, not one run per point)."""

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
                rewards, m = measure(rm)
                if val_cands:
                    m["validation"] = validate(rm)
                rm.model.train()  # (the Trainer sets train mode again each step; LoRA dropout is 0 here)
                m["train_seconds_total"] = round(train_seconds, 1)  # training time from the start, evaluations excluded
                m["last_logged_loss"] = loss
                m["vs_base"] = compare(base_rewards, rewards, eval_rubrics, eval_cands, reps=args.reps, seed=args.seed)
                points[str(step)] = m
                rewards_at[step] = rewards
                save()
                self.eval_seconds += time.perf_counter() - t0
                print(row(f"{label}step {step}", m), flush=True)

        with tempfile.TemporaryDirectory() as tmp:
            return train_reward_model(rm, list(dd["pairs"]), list(dd["pointwise"]), tmp, progress=False, resume=False,
                                      callbacks=[Evaluate()])

    rm = CriteriaRewardModel.load(replace(config, seed=seeds[0]))
    base_rewards, base = measure(rm)  # the untrained model: the same for every seed (a test asserts it)
    base["train_seconds_total"] = 0.0
    if val_cands:
        base["validation"] = validate(rm)
    results["points"]["0"] = base
    save()
    print(HEADER)
    print(row("base (step 0)", base), flush=True)

    if not several:  # one seed, the criterion model only: the learning curve as it always was
        rewards_at: dict = {}
        results["train_stats"] = train_one(rm, "", results["points"], rewards_at, base_rewards)
        if val_cands:
            results["selection"] = select(results["points"], rewards_at, base_rewards)
        save()
        print()
        for step in eval_at:
            d = results["points"][str(step)]["vs_base"]
            s = results["points"][str(step)]["criterion_sensitivity"]
            print(f"step {step} - base (paired over prompts): pairwise {fmt(d['pairwise_accuracy'])}, "
                  f"pairwise safety {fmt(d['pairwise_safety_accuracy'])}, veto F1 {fmt(d['veto_f1'])}, "
                  f"within-response {fmt(d['within_response_accuracy'])}; criterion gap own - shuffled "
                  f"{fmt(s['all']['gap'])} (reads the criterion: {s['reads_criterion']})")
        return

    # several seeds and/or the ablation: every (model, seed) trains from the same base on the same data
    kinds = ["criterion", *(["ablation"] if args.with_ablation else [])]
    rewards = {kind: {s: {} for s in seeds} for kind in kinds}  # kind -> seed -> step -> Rewards
    results["runs"] = {kind: {str(s): {"points": {}} for s in seeds} for kind in kinds}
    results["runs"]["criterion"][str(seeds[0])]["points"] = results["points"]  # the --html curve's run
    for s in seeds:
        for kind in kinds:
            run = results["runs"][kind][str(s)]
            if not (kind == "criterion" and s == seeds[0]):  # the base's model trains as the first run
                rm = None
                gc.collect()
                criteria = "none" if kind == "ablation" else config.criteria
                rm = CriteriaRewardModel.load(replace(config, seed=s, criteria=criteria))
            print(f"-- {kind} model, seed {s}", flush=True)
            run["train_stats"] = train_one(rm, f"{kind} s{s} ", run["points"], rewards[kind][s], base_rewards)
            if val_cands:
                run["selection"] = select({"0": base, **run["points"]}, rewards[kind][s], base_rewards, f"{kind} s{s}: ")
            save()
    rm = None
    gc.collect()
    results["summary"] = seed_summary(results, rewards, base_rewards, eval_rubrics, eval_cands, eval_at, seeds,
                                      reps=args.reps, seed=args.seed)
    save()
    print()
    print(summary_table(results["summary"], seeds))


# (label, evaluate()/compare() key): the metrics of the seed table; ECE is lower-better
SEED_METRICS = (("pairwise", "pairwise_accuracy"), ("pairwise safety", "pairwise_safety_accuracy"),
                ("veto F1", "veto_f1"), ("same-tier within-response", "within_response_same_tier_accuracy"),
                ("disagreeing pairs", "pairwise_disagreeing_accuracy"), ("ECE", "ece"))


def spread(values: list) -> dict:
    """Mean, min, max and sample sd of one metric over seeds (None values — an undefined F1 — left out)."""
    vs = [v for v in values if v is not None]
    if not vs:
        return {"mean": None, "min": None, "max": None, "sd": None, "seeds": 0}
    return {"mean": statistics.fmean(vs), "min": min(vs), "max": max(vs),
            "sd": statistics.stdev(vs) if len(vs) > 1 else 0.0, "seeds": len(vs)}


def seed_summary(results: dict, rewards: dict, base_rewards: dict, rubrics, cands, eval_at: list[int], seeds: list[int],
                 *, reps: int = 1000, seed: int = 0) -> dict:
    """Per --eval-at step: each metric's spread over seeds for base / criterion / ablation, and the paired
    differences criterion - ablation and criterion - base, POOLED over seeds (``evaluation.pool_seeds``:
    every seed's rows of a prompt resampled together, so the CI counts each prompt once) and per seed."""
    out = {}
    runs = results["runs"]
    base = results["points"]["0"]
    for step in eval_at:
        cell = {"base": {key: spread([base[key]["value"]]) for _, key in SEED_METRICS}}
        for kind in runs:
            cell[kind] = {key: spread([runs[kind][str(s)]["points"][str(step)][key]["value"] for s in seeds])
                          for _, key in SEED_METRICS}
        opponents = [("criterion - ablation", "ablation")] if "ablation" in runs else []
        opponents.append(("criterion - base", "base"))
        cell["differences"] = {}
        for name, opponent in opponents:
            other = ({s: base_rewards for s in seeds} if opponent == "base"
                     else {s: rewards[opponent][s][step] for s in seeds})
            mine = {s: rewards["criterion"][s][step] for s in seeds}
            a, pooled_rubrics, pooled_cands = pool_seeds(other, rubrics, cands)
            b, _, _ = pool_seeds(mine, rubrics, cands)
            cell["differences"][name] = {
                "pooled": compare(a, b, pooled_rubrics, pooled_cands, reps=reps, seed=seed, cluster=unpooled_prompt),
                "per_seed": {str(s): compare(other[s], mine[s], rubrics, cands, reps=reps, seed=seed) for s in seeds}}
        out[str(step)] = cell
    return out


def summary_table(summary: dict, seeds: list[int]) -> str:
    """The seed table: mean [min, max] (sd) over seeds per model and metric, then each paired difference pooled
    over seeds with its 95% CI (prompt-clustered) and the per-seed differences."""
    def cell(s: dict) -> str:
        if s["mean"] is None:
            return "n/a"
        return f"{s['mean']:.3f}" if s["seeds"] == 1 else f"{s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}] sd {s['sd']:.3f}"

    lines = []
    for step, c in summary.items():
        models = [m for m in ("base", "criterion", "ablation") if m in c]
        lines.append(f"step {step}: mean [min, max] sd over seeds {','.join(map(str, seeds))} (base: one value, "
                     f"seed-independent); differences pooled over seeds, 95% CI resampling prompts")
        lines.append("| metric | " + " | ".join(models) + " | " + " | ".join(c["differences"]) + " |")
        lines.append("|" + "---|" * (1 + len(models) + len(c["differences"])))
        for label, key in SEED_METRICS:
            diffs = []
            for d in c["differences"].values():
                per = ", ".join("n/a" if v[key]["value"] is None else f"{v[key]['value']:+.3f}" for v in d["per_seed"].values())
                diffs.append(f"{fmt(d['pooled'][key])} (per seed {per})")
            lines.append(f"| {label}{' (lower is better)' if key == 'ece' else ''} | "
                         + " | ".join(cell(c[m][key]) for m in models) + " | " + " | ".join(diffs) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

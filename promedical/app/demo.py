"""The demo pipeline on the embedded model (the README's main command).

Runs the numbered notebooks through papermill (01 rubric generation, 02 review in batch mode),
scores the gold-labelled benchmark candidates, and has the real model answer a held-out question
graded by the machine checks. The steps and their sizes come from configs/<scale>.yaml.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from promedical.app.notebooks import check_notebook_params, notebook_parameters, notebook_path, run_notebook
from promedical.core.data import load_candidates, load_split
from promedical.core.files import write_json
from promedical.core.provenance import DATA_DIR, stamp
from promedical.core.scoring import RewardConfig, grpo_reward, tier_scores
from promedical.models.loading import generate_text, load_model
from promedical.scale.profiles import load_scale


def run_demo(workspace: Path, *, model: str | None = None, scale: str = "demo", max_new_tokens: int = 160) -> Path:
    started = time.perf_counter()
    workspace.mkdir(parents=True, exist_ok=True)
    train, bench = load_split("train"), load_split("bench")
    print(f"[data] {len(train)} train and {len(bench)} benchmark rubrics valid")

    config = load_scale(scale)
    model = model or config["model"]
    steps = {}
    plan = []
    for step in config["steps"]:  # every step checked before the first one runs
        name, params = str(step["notebook"]), dict(step.get("parameters") or {})
        path = notebook_path(name)
        if "model" in notebook_parameters(path):  # the scale's model, for the notebooks that take one
            params = {"model": model, **params}
        check_notebook_params(path, params)
        plan.append((name, params))
    for name, params in plan:
        t0 = time.perf_counter()
        print(f"[notebook] {name} ...", flush=True)
        run_notebook(name, workspace, params)
        steps[name] = round(time.perf_counter() - t0, 1)
        print(f"[notebook] {name} done in {steps[name]} s")
    generation = json.loads((workspace / "rubrics" / "generation_summary.json").read_text())
    review = json.loads((workspace / "rubrics" / "review_summary.json").read_text())
    reward_metrics = workspace / "reward" / "metrics.json"
    reward = reward_summary(json.loads(reward_metrics.read_text())) if reward_metrics.exists() else None
    policy_file = workspace / "policy" / "summary.json"
    policy = policy_summary(json.loads(policy_file.read_text())) if policy_file.exists() else None
    bench_file = workspace / "benchmark" / "benchmark.json"
    benchmark = benchmark_summary(json.loads(bench_file.read_text())) if bench_file.exists() else None

    config = RewardConfig()
    rubrics = {r.id: r for r in bench}
    by_label: dict[str, list[float]] = {}
    vetoed = Counter()
    for cand in load_candidates():
        s = tier_scores(rubrics[cand["prompt_id"]], cand["criteria_met"])
        by_label.setdefault(cand["label"], []).append(grpo_reward(s, config))
        vetoed[cand["label"]] += s.s3 > 0
    mean_reward = {k: round(sum(v) / len(v), 4) for k, v in by_label.items()}
    print(f"[score] mean gold reward by label: {mean_reward}")

    llm, tokenizer = load_model(model)
    print(f"[model] {model} loaded in {llm.load_seconds:.1f} s")
    rubric = bench[0]
    t0 = time.perf_counter()
    answer = generate_text(llm, tokenizer, rubric.messages, max_new_tokens=max_new_tokens)
    gen_seconds = time.perf_counter() - t0
    checked = {c.id: c.check.met(answer) for c in rubric.criteria if c.check is not None}
    print(f"[model] answered {rubric.id} in {gen_seconds:.1f} s; machine checks: {checked}")

    summary = {
        "train_rubrics": len(train), "bench_rubrics": len(bench),
        "notebook_seconds": steps,
        "generation": {k: generation[k] for k in ("items", "ok", "repaired", "failed", "valid_rate", "seconds_per_item")},
        "review": {"approved": review["approved"], "problems": review["reviewed_file_problems"]},
        "reward_model": reward,
        "grpo": policy,
        "benchmark": benchmark,
        "gold_mean_reward_by_label": mean_reward,
        "gold_veto_rate_by_label": {k: round(vetoed[k] / len(v), 4) for k, v in by_label.items()},
        "sample": {"rubric_id": rubric.id, "answer": answer, "machine_checks": checked,
                   "seconds": round(gen_seconds, 2)},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "provenance": stamp(config={"model": model, "reward": config.__dict__},
                            inputs=sorted(DATA_DIR.rglob("*.jsonl"))),
    }
    return write_json(workspace / "summary.json", summary)


def reward_summary(metrics: dict) -> dict:
    """The headline numbers of notebook 03: judge agreement, dataset size, base vs trained RM with the
    paired difference and its CI, and whether the trained RM reads the criterion."""
    card = metrics["dataset_card"]
    cards = [c for c in card.values() if isinstance(c, dict) and "pairs" in c] or [card]
    keys = ("pairwise_accuracy", "pairwise_safety_accuracy", "veto_f1", "within_response_accuracy")
    diff = metrics.get("trained_vs_base", {})
    return {
        "judge_accuracy": metrics["judge_agreement"]["accuracy"],
        "judge_coverage": metrics["judge_agreement"]["coverage"],
        "pairs": sum(c["pairs"] for c in cards),
        "train_steps": metrics["train"]["steps"],
        **{f"{name}_{k}": metrics[name][k]["value"] for name in ("base", "trained") for k in keys},
        **{f"trained_minus_base_{k}": {"value": diff[k]["value"], "ci": diff[k]["ci"]} for k in keys if k in diff},
        "trained_reads_criterion": metrics["trained"].get("criterion_sensitivity", {}).get("reads_criterion"),
    }


def policy_summary(summary: dict) -> dict:
    """The headline numbers of notebook 04: steps, time per step and its split, reward components."""
    return {k: summary[k] for k in ("steps", "seconds_per_step", "split_seconds", "zero_std_group_share",
                                    "first", "last")}


def benchmark_summary(result: dict) -> dict:
    """The headline of notebook 05: the three answers, per-model means and paired differences by the
    headline (independent) grader, the training reward's (circular) beside them, the audit verdict, the report."""
    keys = ("rubric_score", "s1", "safety", "reward")

    def block(s: dict) -> dict:
        return {"models": {m: {"n": v["n"], **{k: v[k]["value"] for k in keys}} for m, v in s["models"].items()},
                "comparisons": {name: {k: {x: c[k][x] for x in ("diff", "ci", "p", "n")} for k in keys}
                                for name, c in s["comparisons"].items()}}

    head = result.get("headline", {})
    grader = head.get("grader") or "reward_model"
    return {
        "grader": grader, **block(result["summary"][grader]),
        "training_reward_circular": block(result["summary"]["reward_model"]),
        "headline": {k: v["answer"] for k, v in head.items() if isinstance(v, dict)},
        "audit": result["audit"]["verdict"], "report": result["report"]["html"],
        "png": sorted(result["report"].get("png", {})),
    }

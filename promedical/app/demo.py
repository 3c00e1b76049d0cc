"""The demo pipeline on the embedded model (the README's main command).

Runs, in pipeline order, the notebook of every step the scale (configs/<scale>.yaml, ``steps:``) lists
(00 corpus, 01 rubric generation, 02 review in batch mode, 03 reward model, 04 GRPO, 05 benchmark) through
papermill, scores the gold-labelled benchmark candidates, and has the real model answer a held-out
question graded by the machine checks. A step's notebook comes from the registry (``promedical.steps``).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from promedical.app.notebooks import check_notebook_params, notebook_path, run_notebook
from promedical.core.data import load_candidates, load_split
from promedical.core.files import write_json
from promedical.core.provenance import DATA_DIR, stamp
from promedical.core.scoring import RewardConfig, grpo_reward, tier_scores
from promedical.core.workspace import Workspace
from promedical.models.loading import generate_text, load_model
from promedical.scale.profiles import Scale, load_scale
from promedical.steps import STEPS


def notebook_plan(scale: Scale) -> list[tuple[str, dict]]:
    """[(notebook, papermill parameters)] of the scale's steps that have a notebook, in pipeline order,
    each checked against its step's config before the first one runs. A step without a notebook
    (rm-train) runs through ``promedical launch``."""
    plan = []
    for name, step in STEPS.items():
        if name in scale.steps and step.notebook:
            params = scale.params(name)
            check_notebook_params(notebook_path(step.notebook), params)
            plan.append((step.notebook, params))
    return plan


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def run_demo(workspace=None, *, model: str | None = None, scale: Scale | str = "demo",
             notebooks: list[tuple[str, dict]] | None = None, max_new_tokens: int = 160) -> Path:
    """Run the scale's notebooks (``notebooks``: the plan ``notebook_plan`` made of it, when the caller
    checked it already) in the workspace, then score and sample; returns the summary's path."""
    started = time.perf_counter()
    scale = (scale if isinstance(scale, Scale) else load_scale(scale)).with_model(model)
    notebooks = notebook_plan(scale) if notebooks is None else notebooks
    model = scale.model or "embedded"
    ws = Workspace.of(workspace)
    train, bench = load_split("train"), load_split("bench")
    print(f"[data] {len(train)} train and {len(bench)} benchmark rubrics valid")

    steps = {}
    for name, params in notebooks:
        t0 = time.perf_counter()
        print(f"[notebook] {name} ...", flush=True)
        run_notebook(name, ws, params)
        steps[name] = round(time.perf_counter() - t0, 1)
        print(f"[notebook] {name} done in {steps[name]} s")
    generation = json.loads(ws.generation_summary.read_text())
    review = json.loads(ws.review_summary.read_text())
    reward = read_json(ws.reward_metrics)
    policy = read_json(ws.policy_summary)
    benchmark = read_json(ws.bench_result)
    reward = reward_summary(reward) if reward else None
    policy = policy_summary(policy) if policy else None
    benchmark = benchmark_summary(benchmark) if benchmark else None

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
    return write_json(ws.summary, summary)


def reward_summary(metrics: dict) -> dict:
    """The headline numbers of notebook 03: judge agreement, dataset size, base vs trained RM with the
    paired difference and its CI, and whether the trained RM reads the criterion: the verdict of the tests
    a scalar score fails (``evaluation.criterion_verdict``), the test that decided it and its instances,
    and the shuffled-criterion check beside it."""
    card = metrics["dataset_card"]
    cards = [c for c in card.values() if isinstance(c, dict) and "pairs" in c] or [card]
    keys = ("pairwise_accuracy", "pairwise_safety_accuracy", "veto_f1", "within_response_accuracy")
    diff = metrics.get("trained_vs_base", {})
    verdict = metrics.get("reads_criterion") or {}
    decided = verdict.get("decided_by")
    return {
        "judge_accuracy": metrics["judge_agreement"]["accuracy"],
        "judge_coverage": metrics["judge_agreement"]["coverage"],
        "pairs": sum(c["pairs"] for c in cards),
        "train_steps": metrics["train"]["steps"],
        **{f"{name}_{k}": metrics[name][k]["value"] for name in ("base", "trained") for k in keys},
        **{f"trained_minus_base_{k}": {"value": diff[k]["value"], "ci": diff[k]["ci"]} for k in keys if k in diff},
        "trained_reads_criterion": verdict.get("reads_criterion"),
        "reads_criterion_decided_by": decided and {k: decided[k] for k in ("metric", "against", "difference", "ci", "n")},
        "shuffled_criterion_check": metrics["trained"].get("criterion_sensitivity", {}).get("reads_criterion"),
        # val_prompts > 0: the step the safety-first selection kept (0: the base model) and its veto threshold
        "selected_step": (metrics["train"].get("selection") or {}).get("step"),
        "veto_threshold": metrics["trained"].get("veto_threshold"),
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

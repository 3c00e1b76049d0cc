"""Stage 05 as phases: answers, grading by each grader, comparison, report."""
from __future__ import annotations

from pathlib import Path

from promedical.bench.config import BenchmarkStepConfig
from promedical.core.config import build
from promedical.core.data import load_split
from promedical.core.files import write_json
from promedical.core.provenance import stamp
from promedical.core.workspace import Stopwatch, Workspace
from promedical.reward.step import load_reward_model
from promedical.rubrics.selection import match_prompt_ids, training_rubrics, workspace_split


def step_benchmark(workspace=None, config: BenchmarkStepConfig | None = None, **params) -> dict:
    """05: base vs aligned policy (and any other model/adapter) on the held-out benchmark, graded by
    graders that did not train the policy (machine checks; the LLM ``judge_model`` when set; gold labels
    on the reference answers) and, labelled circular, by the training reward model; how the graders agree;
    the gameability probes of the reward model; statistics, independence audit, HTML report
    (``config`` and/or ``params``: BenchmarkStepConfig).
    """
    import json

    from promedical.bench.answers import answer
    from promedical.bench.compare import coverage_by_grader, grader_agreement, headline
    from promedical.bench.graders import (
        grade_with_checks,
        grade_with_gold,
        grade_with_llm_judge,
        grade_with_reward_model,
        reference_answers,
    )
    from promedical.bench.probes import gold_responses, run_probes
    from promedical.bench.report import write_report
    from promedical.bench.statistics import summarize
    from promedical.core.audit import audit
    from promedical.core.data import load_candidates
    from promedical.core.files import write_jsonl
    from promedical.core.rubric_files import read_rubrics

    c = build(BenchmarkStepConfig, config, params)
    ws = Workspace.of(workspace)
    out = ws / "benchmark"
    rubrics = read_rubrics(c.bench_file) if c.bench_file else [r for r in workspace_split(ws, "bench") if r.criteria]
    rubrics = rubrics[:c.n_bench] if c.n_bench else rubrics
    adapter = Path(c.policy_adapter) if c.policy_adapter else ws / "policy" / "adapter"
    models = {"base": (c.model, None)}
    if (adapter / "adapter_config.json").is_file():
        models["aligned"] = (c.model, adapter)
    elif c.policy_adapter:
        raise FileNotFoundError(f"no policy adapter at {adapter} (missing adapter_config.json)")
    models.update({k: v if isinstance(v, dict) else tuple(v) for k, v in (c.extra_models or {}).items()})
    clock = Stopwatch()
    answers = answer(models, rubrics, max_new_tokens=c.max_new_tokens, out_path=out / "answers.jsonl",
                     progress=c.progress, cache_dir=ws / "cache" / "llm")
    clock.lap("answer")
    gold = match_prompt_ids(rubrics, load_candidates()) if not c.bench_file else []  # the shipped gold, by original id
    refs = reference_answers(gold, [r.id for r in rubrics], c.n_reference)
    everything = answers + refs
    rm = load_reward_model(ws, c.reward_adapter)
    graded = [{**g, "coverage": 1.0} for g in grade_with_reward_model(rm, rubrics, everything, progress=c.progress)]
    clock.lap("grade_reward_model")
    graded += grade_with_checks(rubrics, everything)
    judge_coverage = None
    if c.judge_model:
        from promedical.models.sources import llm_for

        judge = llm_for(c.judge_model, ws / "cache" / "llm")  # a model spec, or a source dict (any backend)
        judged = {r.id for r in (rubrics[:c.n_judge] if c.n_judge is not None else rubrics)}
        rows, judge_coverage = grade_with_llm_judge(judge, rubrics, [a for a in everything if a["prompt_id"] in judged],
                                                    explanation_chars=c.judge_explanation_chars, progress=c.progress)
        graded += rows
        clock.lap("grade_judge")
    graded += grade_with_gold(rubrics, [{**r, "criteria_met": r["gold_criteria_met"]} for r in refs])
    write_jsonl(out / "graded.jsonl", graded)
    summary = summarize(graded, baseline="base")
    grader_agreement = grader_agreement(graded, rubrics)
    probes = None
    if c.n_probe > 0:
        probes = run_probes(rm.score_batch, load_split("bench"), gold_responses(load_candidates(), c.n_probe))
        write_json(out / "probes.json", probes)
        clock.lap("probes")
    independence = audit(training_rubrics(ws), rubrics)
    metrics_file, policy_file = ws / "reward" / "metrics.json", ws / "policy" / "summary.json"
    reward_metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    policy_summary = json.loads(policy_file.read_text()) if policy_file.is_file() else {}
    head = headline(summary, reward_metrics, probes)
    caveat = (f"Scale of this run: policy {c.model}, {len(rubrics)} benchmark items, {policy_summary.get('steps', 0)} GRPO "
              f"steps. Headline grader: {head['grader'] or 'none (only the training reward graded the policy)'}. "
              "With a small model, few steps and few items the intervals are wide: this run shows the pipeline end "
              "to end and measures what it measures; it is not evidence that the method improves a model. Claims of "
              "improvement need the full scale (configs/full.yaml).")
    shown = dict(model=c.model, models={k: v if isinstance(v, dict) else [v[0], None if v[1] is None else str(v[1])]
                                        for k, v in models.items()},
                  bench_file=c.bench_file, n_bench=len(rubrics), max_new_tokens=c.max_new_tokens, judge_model=c.judge_model,
                  n_judge=c.n_judge, n_reference=len(refs), n_probe=c.n_probe)
    prov = stamp(config=shown)
    grading = {"headline": head, "agreement": grader_agreement, "coverage": coverage_by_grader(graded),
               "judge_coverage": judge_coverage, "monitor": policy_summary.get("monitor")}
    report = write_report(out / "report.html", summary=summary, graded=graded, audit=independence,
                          reward_metrics=reward_metrics, params=shown, provenance=prov, caveat=caveat, png=c.png,
                          grading=grading, probes=probes)
    clock.lap("report")
    result = {"headline": head, "summary": summary, "grading": grading,
              "probes": None if probes is None else {k: v for k, v in probes.items() if k != "per_response"},
              "audit": {k: v for k, v in independence.items() if k != "items"},
              "report": report, "graded_file": str(out / "graded.jsonl"), "caveat": caveat, "parameters": shown,
              "seconds": clock.laps, "provenance": prov}
    write_json(out / "audit.json", independence)
    write_json(out / "benchmark.json", result)
    return result

"""Stage 05 as phases: the benchmark items -> answers -> grades by each grader -> the reward model's
gameability probes -> the comparison -> the report; ``step_benchmark`` composes them. Notebook 05 calls
the same functions, one cell each, so a researcher can change what one phase made (drop an answer, say)
before the next.

The costly phases (answering, the LLM judge, the probes) keep a reuse record (``core.phases.Phase``):
re-run with the same inputs and config, they say so and load their artefact.
"""
from __future__ import annotations

import json
from pathlib import Path

from promedical.bench.config import BenchmarkStepConfig
from promedical.core.config import build
from promedical.core.data import load_candidates, load_split
from promedical.core.files import read_jsonl, write_json, write_jsonl
from promedical.core.phases import Phase
from promedical.core.provenance import stamp
from promedical.core.timing import Stopwatch
from promedical.core.workspace import Workspace
from promedical.reward.inputs import load_reward_model
from promedical.rubrics.selection import match_prompt_ids, training_rubrics, workspace_split


def benchmark_rubrics(workspace, config: BenchmarkStepConfig) -> list:
    """The benchmark items: ``bench_file``, else the workspace's bench split (items with a rubric), the
    first ``n_bench`` of them."""
    from promedical.core.rubric_files import read_rubrics

    c = config
    if c.bench_file:
        rubrics = read_rubrics(c.bench_file)
    else:
        rubrics = [r for r in workspace_split(workspace, "bench") if r.criteria]
    return rubrics[:c.n_bench] if c.n_bench else rubrics


def benchmarked_models(workspace, config: BenchmarkStepConfig) -> dict:
    """{name: (model spec, adapter or None) or a source mapping}: "base", "aligned" (base + the policy
    adapter, when there is one) and ``extra_models``."""
    c = config
    adapter = Path(c.policy_adapter) if c.policy_adapter else Workspace.of(workspace).policy_adapter
    models = {"base": (c.model, None)}
    if (adapter / "adapter_config.json").is_file():
        models["aligned"] = (c.model, adapter)
    elif c.policy_adapter:
        raise FileNotFoundError(f"no policy adapter at {adapter} (missing adapter_config.json)")
    models.update({k: v if isinstance(v, dict) else tuple(v) for k, v in (c.extra_models or {}).items()})
    return models


def _weights(path) -> list[Path]:
    """The files of an adapter or answers file, for a phase key (hashed by content)."""
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _model_key(spec) -> object:
    if isinstance(spec, dict):
        return {**spec, "files": _weights(spec["path"])} if spec.get("kind") == "file" else spec
    model, adapter = spec
    return [model, None if adapter is None else _weights(adapter)]


def answer(workspace, config: BenchmarkStepConfig, rubrics: list) -> list[dict]:
    """One greedy answer per (model, item) from every benchmarked model (``max_new_tokens``), then the
    ``n_reference`` gold-labelled candidates of these items as the answers of the model "reference" (each
    with its ``gold_criteria_met``). Writes benchmark/answers.jsonl; reused when the items, the models
    (adapters by content) and the settings are unchanged."""
    from promedical.bench.answers import generate_answers
    from promedical.bench.graders import reference_answers

    ws = Workspace.of(workspace)
    c = config
    models = benchmarked_models(ws, c)
    gold = match_prompt_ids(rubrics, load_candidates()) if not c.bench_file else []  # the shipped gold, by original id
    refs = reference_answers(gold, [r.id for r in rubrics], c.n_reference)
    phase = Phase(ws, "bench.answer", inputs=(rubrics, {k: _model_key(v) for k, v in models.items()}, refs),
                  config={"max_new_tokens": c.max_new_tokens})
    if phase.reusable():
        return read_jsonl(ws.bench_answers)
    answers = generate_answers(models, rubrics, max_new_tokens=c.max_new_tokens, progress=c.progress,
                               cache_dir=ws.llm_cache) + refs
    write_jsonl(ws.bench_answers, answers)
    phase.done(ws.bench_answers)
    return answers


def reward_model(workspace, config: BenchmarkStepConfig):
    """The training reward model (``reward_adapter``, else the workspace's), frozen: a grader (circular)
    and the subject of the probes."""
    return load_reward_model(workspace, config.reward_adapter)


def grade_judge(workspace, config: BenchmarkStepConfig, rubrics: list, answers: list[dict]) -> list[dict]:
    """The LLM judge's rows (``judge_model``) on the answers to the first ``n_judge`` items; reused when
    those answers and the judge settings are unchanged (benchmark/judge_graded.jsonl)."""
    from promedical.bench.graders import grade_with_llm_judge
    from promedical.models.sources import llm_for

    ws = Workspace.of(workspace)
    c = config
    judged_rubrics = rubrics[:c.n_judge] if c.n_judge is not None else rubrics
    judged = {r.id for r in judged_rubrics}
    mine = [a for a in answers if a["prompt_id"] in judged]
    phase = Phase(ws, "bench.judge", inputs=(judged_rubrics, mine),
                  config={"judge_model": c.judge_model, "judge_explanation_chars": c.judge_explanation_chars})
    if phase.reusable():
        return read_jsonl(ws.bench_judge_grades)
    judge = llm_for(c.judge_model, ws.llm_cache)  # a model spec, or a source dict (any backend)
    rows = grade_with_llm_judge(judge, rubrics, mine, explanation_chars=c.judge_explanation_chars, progress=c.progress)
    write_jsonl(ws.bench_judge_grades, rows)
    phase.done(ws.bench_judge_grades)
    return rows


def grade(workspace, config: BenchmarkStepConfig, rubrics: list, answers: list[dict], rm=None) -> dict[str, list[dict]]:
    """Every answer graded by each grader: {grader: rows} for "reward_model" (the training reward, circular;
    ``rm``, else loaded), "checks" (the rubrics' machine checks), "judge" (when ``judge_model`` is set) and
    "gold" (the reference answers' own labels). All rows in benchmark/graded.jsonl."""
    from promedical.bench.graders import grade_with_checks, grade_with_gold, grade_with_reward_model

    ws = Workspace.of(workspace)
    rm = rm if rm is not None else reward_model(ws, config)
    graded = {"reward_model": [{**g, "coverage": 1.0}
                               for g in grade_with_reward_model(rm, rubrics, answers, progress=config.progress)],
              "checks": grade_with_checks(rubrics, answers)}
    if config.judge_model:
        graded["judge"] = grade_judge(ws, config, rubrics, answers)
    refs = [a for a in answers if "gold_criteria_met" in a]
    graded["gold"] = grade_with_gold(rubrics, [{**a, "criteria_met": a["gold_criteria_met"]} for a in refs])
    write_jsonl(ws.bench_graded, [row for rows in graded.values() for row in rows])
    return graded


def probe(workspace, config: BenchmarkStepConfig, rm=None) -> dict | None:
    """The gameability probes of the training reward model on ``n_probe`` good gold responses (None when
    0): length padding, pasted criterion keywords, disclaimers, a physician claim. Writes
    benchmark/probes.json; reused while the reward model's adapter and ``n_probe`` are unchanged."""
    from promedical.bench.probes import gold_responses, run_probes

    ws = Workspace.of(workspace)
    if config.n_probe == 0:
        return None
    phase = Phase(ws, "bench.probe", inputs=_weights(config.reward_adapter or ws.reward_adapter),
                  config={"n_probe": config.n_probe})
    if phase.reusable():
        return json.loads(ws.bench_probes.read_text(encoding="utf-8"))
    rm = rm if rm is not None else reward_model(ws, config)
    probes = run_probes(rm.score_batch, load_split("bench"), gold_responses(load_candidates(), config.n_probe))
    write_json(ws.bench_probes, probes)
    phase.done(ws.bench_probes)
    return probes


def _optional_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def compare(workspace, config: BenchmarkStepConfig, rubrics: list, graded: dict[str, list[dict]],
            probes: dict | None = None) -> dict:
    """Per grader and model: metrics with bootstrap CIs and paired comparisons against "base"; how the
    graders agree (kappa per pair, per tier); coverage; the headline (three questions answered from the
    run: the reward model (03's metrics), the policy (by an independent grader), the probes); the
    independence audit of the benchmark against the training rubrics. Writes benchmark/comparison.json
    and benchmark/audit.json."""
    from promedical.bench.compare import coverage_by_grader, criterion_coverage, grader_agreement, headline
    from promedical.bench.statistics import summarize
    from promedical.core.audit import audit

    ws = Workspace.of(workspace)
    rows = [row for rs in graded.values() for row in rs]
    summary = summarize(rows, baseline="base")
    policy_summary = _optional_json(ws.policy_summary) or {}
    grading = {"headline": headline(summary, _optional_json(ws.reward_metrics), probes),
               "agreement": grader_agreement(rows, rubrics), "coverage": coverage_by_grader(rows),
               "judge_coverage": criterion_coverage(graded.get("judge", []), rubrics),
               "monitor": policy_summary.get("monitor")}
    independence = audit(training_rubrics(ws), rubrics)
    write_json(ws.bench_audit, independence)
    comparison = {"summary": summary, "grading": grading, "audit": independence}
    write_json(ws.bench_comparison, comparison)
    return comparison


def report(workspace, config: BenchmarkStepConfig, rubrics: list, graded: dict[str, list[dict]], comparison: dict,
           probes: dict | None = None, seconds: dict | None = None) -> dict:
    """The HTML report (benchmark/report.html, PNGs beside it when ``png``) and the run's result
    (benchmark/benchmark.json, returned): headline, per-grader summary, grading, probes, audit verdict,
    the caveat of its scale, parameters, the seconds per phase (when timed) and provenance."""
    from promedical.bench.report import write_report

    ws = Workspace.of(workspace)
    c = config
    rows = [row for rs in graded.values() for row in rs]
    models = benchmarked_models(ws, c)
    summary, grading, independence = comparison["summary"], comparison["grading"], comparison["audit"]
    head = grading["headline"]
    steps = (_optional_json(ws.policy_summary) or {}).get("steps", 0)
    caveat = (f"Scale of this run: policy {c.model}, {len(rubrics)} benchmark items, {steps} GRPO "
              f"steps. Headline grader: {head['grader'] or 'none (only the training reward graded the policy)'}. "
              "With a small model, few steps and few items the intervals are wide: this run shows the pipeline end "
              "to end and measures what it measures; it is not evidence that the method improves a model. Claims of "
              "improvement need the full scale (configs/full.yaml).")
    n_reference = len({r["response_id"] for r in rows if r["model"] == "reference"})
    shown = dict(model=c.model, models={k: v if isinstance(v, dict) else [v[0], None if v[1] is None else str(v[1])]
                                        for k, v in models.items()},
                 bench_file=c.bench_file, n_bench=len(rubrics), max_new_tokens=c.max_new_tokens,
                 judge_model=c.judge_model, n_judge=c.n_judge, n_reference=n_reference, n_probe=c.n_probe)
    prov = stamp(config=shown)
    paths = write_report(ws.bench_report, summary=summary, graded=rows, audit=independence,
                         reward_metrics=_optional_json(ws.reward_metrics), params=shown, provenance=prov, caveat=caveat,
                         png=c.png, grading=grading, probes=probes)
    result = {"headline": head, "summary": summary, "grading": grading,
              "probes": None if probes is None else {k: v for k, v in probes.items() if k != "per_response"},
              "audit": {k: v for k, v in independence.items() if k != "items"},
              "report": paths, "graded_file": str(ws.bench_graded), "caveat": caveat, "parameters": shown,
              "seconds": seconds or {}, "provenance": prov}
    write_json(ws.bench_result, result)
    return result


def step_benchmark(workspace=None, config: BenchmarkStepConfig | None = None, **params) -> dict:
    """05: base vs aligned policy (and any other model/adapter) on the held-out benchmark, graded by
    graders that did not train the policy (machine checks; the LLM ``judge_model`` when set; gold labels
    on the reference answers) and, labelled circular, by the training reward model; how the graders agree;
    the gameability probes of the reward model; statistics, independence audit, HTML report
    (``config`` and/or ``params``: BenchmarkStepConfig): ``benchmark_rubrics`` -> ``answer`` -> ``grade``
    -> ``probe`` -> ``compare`` -> ``report``. Returns benchmark/benchmark.json.
    """
    c = build(BenchmarkStepConfig, config, params)
    ws = Workspace.of(workspace)
    clock = Stopwatch()
    rubrics = benchmark_rubrics(ws, c)
    answers = answer(ws, c, rubrics)
    clock.lap("answer")
    rm = reward_model(ws, c)
    graded = grade(ws, c, rubrics, answers, rm)
    clock.lap("grade")
    probes = probe(ws, c, rm)
    clock.lap("probes")
    comparison = compare(ws, c, rubrics, graded, probes)
    clock.lap("compare")
    return report(ws, c, rubrics, graded, comparison, probes, seconds=clock.laps)

"""The numbered steps as functions: the notebooks, the CLI and papermill all call these."""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

from .data import load_split
from .files import write_json
from .generate import FewShotPool, generate_rubrics, load_generated
from .llm import GenParams, make_llm
from .provenance import DATA_DIR, stamp
from .rubric import file_problems
from .store import RubricStore

REPO = DATA_DIR.parent


class Stopwatch:
    """Named laps in seconds (what each phase of a step cost)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 1)
        self._t = now


def workspace_path(workspace: str | Path | None = None) -> Path:
    """None -> $PROMEDICAL_WORKSPACE or runs/demo at the repo root."""
    path = Path(workspace or os.environ.get("PROMEDICAL_WORKSPACE") or REPO / "runs" / "demo")
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_store(workspace: str | Path | None = None) -> RubricStore:
    return RubricStore(workspace_path(workspace) / "rubrics")


def step_generate(workspace=None, *, model: str = "embedded", backend: str = "transformers",
                  base_url: str | None = None, n_instructions: int = 3, seed: int = 0, constrained: bool = True,
                  few_shot_k: int = 1, max_new_tokens: int = 512, progress: bool = True) -> dict:
    """01: draft rubrics for n training instructions and add them to the store as drafts."""
    ws = workspace_path(workspace)
    store = open_store(ws)
    instructions = workspace_split(ws, "train")
    items = list(instructions)
    random.Random(seed).shuffle(items)
    items = items[:n_instructions]
    # few-shot pool: reviewed rubrics first (they supersede a reference of the same id), then the
    # references that came with the workspace's instructions, then the kit's own reference rubrics
    pool = FewShotPool(store.rubrics(status="approved"))
    pool.add([r for r in instructions if r.criteria])
    pool.add(load_split("train"))
    llm = make_llm(backend, model, base_url=base_url, cache_dir=ws / "cache" / "llm")
    out = ws / "rubrics" / "generated.jsonl"
    params = GenParams(max_new_tokens=max_new_tokens, seed=seed, repetition_penalty=1.1)
    summary = generate_rubrics(items, llm, out, pool=pool, k=few_shot_k, constrained=constrained,
                               params=params, progress=progress)
    added = store.import_rubrics(load_generated(out), author=f"generator:{model}", reason="LLM draft")
    summary.update(added_to_store=added, results=str(out),
                   provenance=stamp(config=dict(model=model, backend=backend, n=n_instructions, constrained=constrained,
                                                k=few_shot_k, max_new_tokens=max_new_tokens), seed=seed))
    write_json(ws / "rubrics" / "generation_summary.json", summary)
    return summary


def step_review(workspace=None, *, reviewer: str = "demo-clinician", reviews_file: str | None = None,
                policy: str | None = None) -> dict:
    """02 in batch mode: apply a reviews file and/or a policy, then export and validate reviewed rubrics."""
    from .review import apply_policy, apply_reviews, review_analytics

    ws = workspace_path(workspace)
    store = open_store(ws)
    result: dict = {}
    if reviews_file:
        result["reviews"] = apply_reviews(store, reviews_file)
    if policy:
        result["policy"] = apply_policy(store, policy, reviewer)
    reviewed = store.export(ws / "rubrics" / "reviewed.jsonl", status="approved")
    result["approved"] = len(store.rubrics(status="approved"))
    result["reviewed_file_problems"] = [str(p) for p in file_problems(reviewed)] if result["approved"] else []
    result["analytics"] = review_analytics(store)
    write_json(ws / "rubrics" / "review_summary.json", result)
    return result


def workspace_split(workspace=None, split: str = "train") -> list:
    """The workspace's instructions of a split as rubrics: step 00's curated table (each with the
    reference rubric its source carried, else no criteria yet) or, where 00 has not run, the shipped
    demo split (data/)."""
    from .corpus.store import data_dir, instruction_rubrics

    ws = workspace_path(workspace)
    if (data_dir(ws) / f"{split}.parquet").is_file():
        return instruction_rubrics(ws, split)
    return load_split(split)


def training_rubrics(workspace=None, n: int | None = None, seed: int = 0) -> list:
    """The workspace's train rubrics, each replaced by its clinician-approved revision where one exists;
    instructions with no rubric yet (neither a reference nor an approved draft) are left out."""
    approved = {r.id: r for r in open_store(workspace).rubrics(status="approved")}
    rubrics = [approved.get(r.id, r) for r in workspace_split(workspace, "train")]
    rubrics = [r for r in rubrics if r.criteria]
    random.Random(seed).shuffle(rubrics)
    return rubrics[:n] if n else rubrics


def match_prompt_ids(rubrics, candidates: list[dict]) -> list[dict]:
    """Candidates of these rubrics, a candidate's ``prompt_id`` matched to a rubric's id or to the
    original id its source gave it (step 00 prefixes ids with the source name)."""
    alias = {r.id: r.id for r in rubrics}
    for r in rubrics:
        original = ((r.provenance or {}).get("lineage") or {}).get("original_id")
        if original:
            alias.setdefault(str(original), r.id)
    return [{**c, "prompt_id": alias[c["prompt_id"]]} for c in candidates if c["prompt_id"] in alias]


LABEL_SOURCES = ("judge", "gold", "both")


def step_reward(workspace=None, *, policy_model: str = "embedded", judge_model: str | dict = "embedded",
                temperatures: tuple = (0.7, 1.0), candidate_sources: list[dict] | None = None,
                n_instructions: int = 4, max_new_tokens: int = 160,
                n_judge_check: int = 4, judge_explanation_chars: int = 60, n_eval_prompts: int | None = None,
                n_adjudicate: int = 2, labels: str = "judge", gold_labels: str | None = None,
                rm_backend: str = "peft", rm_model: str | None = None, rm_steps: int = 20, rm_batch_size: int = 2,
                rm_lr: float = 2e-4, rm_question: str = "good", rm_lora_layers: int | None = None,
                rm_bce_balance: str = "tier", rm_report_to: str = "tensorboard", seed: int = 0, train: bool = True, progress: bool = True) -> dict:
    """03: candidates -> judgments -> pairs -> Explicit Criteria Injection reward model -> evaluation.

    ``labels``: "judge" trains on the judge's grades of candidates the policy samples; "gold" on
    expert-style gold labels (``gold_labels``: a candidates JSONL with ``criteria_met`` per criterion of
    the reference rubrics; default the shipped data/train/candidates.jsonl); "both" on the union.
    The judge is measured against the benchmark's gold labels before anything is trained on its labels.
    ``judge_model``: a model spec, or a source dict for another backend (candidates.Source, e.g.
    {"kind": "openai", "model": ..., "base_url": ..., "concurrency": 64}).
    ``candidate_sources``: a list of source dicts (local models, vLLM, OpenAI-compatible endpoints,
    response files) to sample candidates from, in place of ``policy_model`` at ``temperatures``.
    ``train=False`` stops after the dataset (full scale trains with `promedical launch rm-train`)."""
    from datasets import DatasetDict, concatenate_datasets

    from .candidates import candidates_from_sources, llm_for, sample_candidates, spec_label
    from .data import load_candidates
    from .files import read_jsonl
    from .judge import adjudication_report, agreement, grade_responses, judgments_to_grades
    from .pairs import build_datasets, save_datasets
    from .reward_model import CriteriaRewardModel, RMConfig
    from .rm_eval import compare, evaluate, score_with_substitutes, shuffled_criteria

    if labels not in LABEL_SOURCES:
        raise ValueError(f"labels must be one of {LABEL_SOURCES}, got {labels!r}")
    ws = workspace_path(workspace)
    out = ws / "reward"
    cache = ws / "cache" / "llm"
    clock = Stopwatch()
    rubrics = training_rubrics(ws, n_instructions, seed)
    judge = llm_for(judge_model, cache)

    # judge agreement with the gold labels first, before anything is trained on its labels
    bench, gold = load_split("bench"), load_candidates(n_eval_prompts)
    gold_cands = gold[:n_judge_check]
    gold_judgments = grade_responses(bench, gold_cands, judge, progress=progress,
                                     explanation_chars=judge_explanation_chars)
    judge_report = agreement(gold_judgments, {(c["prompt_id"], c["response_id"]): c["criteria_met"] for c in gold_cands},
                             {r.id: r for r in bench})
    judge_report["adjudication"] = adjudication_report(judge, bench, gold, n_adjudicate,
                                                       explanation_chars=judge_explanation_chars)
    clock.lap("judge_check")

    parts, cards = [], {}
    if labels in ("judge", "both"):
        if candidate_sources:
            candidates = candidates_from_sources(rubrics, candidate_sources, seed=seed, cache_dir=cache,
                                                 out_path=out / "candidates.jsonl",
                                                 # a local judge model is reused, not loaded twice
                                                 llms={f"transformers:{judge_model}": judge}
                                                 if isinstance(judge_model, str) else None)
        else:
            policy = judge if judge_model == policy_model else make_llm("transformers", policy_model, cache_dir=cache)
            candidates = sample_candidates(rubrics, [(policy, t) for t in temperatures], max_new_tokens=max_new_tokens,
                                           seed=seed, out_path=out / "candidates.jsonl")
        clock.lap("candidates")
        judgments = grade_responses(rubrics, candidates, judge, progress=progress,
                                    explanation_chars=judge_explanation_chars)
        dd, cards["judge"] = build_datasets(rubrics, candidates, judgments_to_grades(judgments))
        cards["judge"]["sources"] = ({"candidates": [spec_label(c) for c in candidate_sources]} if candidate_sources else
                                     {"policy": policy_model, "temperatures": list(temperatures)})
        cards["judge"]["sources"]["judge"] = spec_label(judge_model)
        parts.append(dd)
        clock.lap("judging")
    if labels in ("gold", "both"):
        path = Path(gold_labels) if gold_labels else DATA_DIR / "train" / "candidates.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"gold_labels: no file at {path}")
        wanted = {r.id for r in rubrics}
        # the reference rubrics the gold labels were written for (not a reviewed revision of them)
        reference = [r for r in workspace_split(ws, "train") if r.id in wanted and r.criteria]
        gold_train = match_prompt_ids(reference, read_jsonl(path))
        dd, cards["gold"] = build_datasets(reference, gold_train)
        cards["gold"]["sources"] = {"gold_labels": str(path)}
        parts.append(dd)
    dd = DatasetDict({k: concatenate_datasets([d[k] for d in parts]) for k in ("pairs", "pointwise")})
    card = cards[labels] if labels != "both" else {"labels": "both", **cards}
    save_datasets(dd, card, out / "dataset")
    if not train:
        metrics = {"judge_agreement": judge_report, "dataset_card": card, "seconds": clock.laps}
        write_json(out / "metrics.json", metrics)
        return metrics

    config = RMConfig(model=rm_model or policy_model, backend=rm_backend, question=rm_question, max_steps=rm_steps,
                      batch_size=rm_batch_size, lr=rm_lr, lora_layers=rm_lora_layers, bce_balance=rm_bce_balance, seed=seed,
                      report_to=rm_report_to)
    rm = CriteriaRewardModel.load(config)
    eval_rubrics = [r for r in bench if r.id in {c["prompt_id"] for c in gold}]
    swap = shuffled_criteria(eval_rubrics, seed=seed)

    def measure():  # own and shuffled criteria (does the model read the criterion?)
        own, shuffled = score_with_substitutes(rm.score_batch, bench, gold, swap, progress=progress)
        return own, evaluate(own, bench, gold, shuffled=shuffled)

    base_rewards, base = measure()  # LoRA at init = base model
    clock.lap("eval_base")
    pairs, point = list(dd["pairs"]), list(dd["pointwise"])
    train_stats = rm.train(pairs, point, out, progress=progress) if pairs or point else {"steps": 0}
    clock.lap("train")
    trained_rewards, trained = measure()
    clock.lap("eval_trained")
    metrics = {"base": base, "trained": trained, "trained_vs_base": compare(base_rewards, trained_rewards, bench, gold),
               "judge_agreement": judge_report, "dataset_card": card, "train": train_stats, "seconds": clock.laps,
               "provenance": stamp(config={**config.__dict__, "temperatures": list(temperatures), "labels": labels,
                                           "n_instructions": n_instructions, "judge": judge_model,
                                           "n_eval_prompts": n_eval_prompts}, seed=seed)}
    write_json(out / "metrics.json", metrics)
    return metrics


def load_reward_model(workspace=None, adapter: str | Path | None = None):
    """The reward model trained by 03 (or any adapter directory holding an rm_config.json), frozen."""
    import json

    from .reward_model import CriteriaRewardModel, RMConfig

    adapter = Path(adapter) if adapter else workspace_path(workspace) / "reward" / "adapter"
    config_file = adapter / "rm_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no reward-model adapter at {adapter} (missing rm_config.json): "
                                "run notebook 03 first, or pass the adapter directory")
    rm = CriteriaRewardModel.load(RMConfig(**json.loads(config_file.read_text(encoding="utf-8"))), adapter=adapter)
    rm.model.requires_grad_(False)
    return rm


def step_grpo(workspace=None, *, policy_model: str = "embedded", reward_adapter: str | None = None,
              n_instructions: int | None = None, resume: bool = True, live: bool | None = None,
              monitor_every: int = 3, n_monitor_prompts: int = 2, monitor_max_new_tokens: int = 48,
              monitor_judge: str | None = None, **settings) -> dict:
    """04: GRPO on the policy, rewarded by the frozen reward model through the hierarchical formula.

    ``settings`` are GRPOSettings fields (steps, group_size, max_completion_length, lr, kl_beta, alpha,
    beta, lam, mode, backend, seed, ...). Writes policy/adapter, policy/log.json and policy/curves.html.
    Reward-hacking monitor (``promedical.monitor``): every ``monitor_every`` steps the ``n_monitor_prompts``
    training prompts with the most machine checks are answered greedily (``monitor_max_new_tokens``) and
    graded by the RM and by the checks (+ the LLM ``monitor_judge`` when set); rows in policy/log.json,
    figure in policy/monitor.html. ``n_monitor_prompts=0`` turns it off.
    """
    from .grpo import GRPOSettings, RubricReward, train_policy
    from .monitor import PREFIX, hacking_monitor, probe_rubrics
    from .plots import live_curves

    if n_monitor_prompts > 0 and monitor_every < 1:
        raise ValueError(f"monitor_every must be >= 1, got {monitor_every}")
    ws = workspace_path(workspace)
    config = GRPOSettings(policy=policy_model, **settings)
    rm = load_reward_model(ws, reward_adapter)
    rubrics = training_rubrics(ws, n_instructions, config.seed)
    out = ws / "policy"
    callbacks = [live_curves(out / "curves.html", display=live)]
    if n_monitor_prompts > 0:
        judge = make_llm("transformers", monitor_judge, cache_dir=ws / "cache" / "llm") if monitor_judge else None
        probes = probe_rubrics(rubrics, n_monitor_prompts)
        callbacks.append(hacking_monitor(RubricReward(rm.score_batch, {r.id: r for r in probes}, config.reward_config(),
                                                      config.mode), probes, every=monitor_every,
                                         max_new_tokens=monitor_max_new_tokens, judge=judge,
                                         html_path=out / "monitor.html"))
    summary = train_policy(config, rubrics, rm.score_batch, out, resume=resume, callbacks=callbacks)
    if n_monitor_prompts > 0:
        import json

        history = json.loads((out / "log.json").read_text(encoding="utf-8"))["history"]
        rows = [{k.removeprefix(PREFIX): v for k, v in h.items() if k != f"{PREFIX}answers"}
                for h in history if f"{PREFIX}gap" in h]
        summary["monitor"] = {"every": monitor_every, "prompts": [r.id for r in probes], "judge": monitor_judge,
                              "rows": rows, "html": str(out / "monitor.html") if rows else None}
    summary["reward_model"] = str(reward_adapter or ws / "reward" / "adapter")
    summary["provenance"] = stamp(config={**summary["settings"], "n_instructions": n_instructions}, seed=config.seed)
    write_json(out / "summary.json", summary)
    return summary


def step_benchmark(workspace=None, *, model: str = "embedded", policy_adapter: str | None = None,
                   reward_adapter: str | None = None, extra_models: dict | None = None, bench_file: str | None = None,
                   n_bench: int | None = None, max_new_tokens: int = 256, judge_model: str | dict | None = None,
                   judge_explanation_chars: int = 60, n_judge: int | None = None, n_reference: int = 8, n_probe: int = 8,
                   png: bool = True, progress: bool = True) -> dict:
    """05: base vs aligned policy (and any other model/adapter) on the held-out benchmark, graded by
    graders that did not train the policy (machine checks; the LLM ``judge_model`` when set; gold labels
    on the reference answers) and, labelled circular, by the training reward model; how the graders agree;
    the gameability probes of the reward model; statistics, independence audit, HTML report.

    ``bench_file``: a rubric JSONL to benchmark instead of data/bench (e.g. from `promedical healthbench import`;
    it has no reference answers). ``extra_models``: {name: [model spec, adapter or None]}. ``n_judge``: the
    LLM judge grades the answers to the first n items (and the reference answers among them); None: all
    (a judge call per criterion is the slow part on a CPU). ``n_reference``:
    gold-labelled benchmark candidates graded as the model "reference" (every grader vs gold); ``n_probe``:
    good gold responses run through ``probes.run_probes``.
    """
    import json

    from .audit import audit
    from .benchmark import answer, grade_with_reward_model, summarize
    from .data import load_candidates
    from .files import write_jsonl
    from .grading import (agreement, coverage_by_grader, grade_with_checks, grade_with_gold, grade_with_llm_judge,
                          headline, reference_answers)
    from .probes import gold_responses, run_probes
    from .report import write_report
    from .rubric import read_rubrics

    ws = workspace_path(workspace)
    out = ws / "benchmark"
    rubrics = read_rubrics(bench_file) if bench_file else [r for r in workspace_split(ws, "bench") if r.criteria]
    rubrics = rubrics[:n_bench] if n_bench else rubrics
    adapter = Path(policy_adapter) if policy_adapter else ws / "policy" / "adapter"
    models = {"base": (model, None)}
    if (adapter / "adapter_config.json").is_file():
        models["aligned"] = (model, adapter)
    elif policy_adapter:
        raise FileNotFoundError(f"no policy adapter at {adapter} (missing adapter_config.json)")
    models.update({k: tuple(v) for k, v in (extra_models or {}).items()})
    clock = Stopwatch()
    answers = answer(models, rubrics, max_new_tokens=max_new_tokens, out_path=out / "answers.jsonl", progress=progress)
    clock.lap("answer")
    gold = match_prompt_ids(rubrics, load_candidates()) if not bench_file else []  # the shipped gold, by original id
    refs = reference_answers(gold, [r.id for r in rubrics], n_reference)
    everything = answers + refs
    rm = load_reward_model(ws, reward_adapter)
    graded = [{**g, "coverage": 1.0} for g in grade_with_reward_model(rm, rubrics, everything, progress=progress)]
    clock.lap("grade_reward_model")
    graded += grade_with_checks(rubrics, everything)
    judge_coverage = None
    if judge_model:
        from .candidates import llm_for

        judge = llm_for(judge_model, ws / "cache" / "llm")  # a model spec, or a source dict (any backend)
        judged = {r.id for r in (rubrics[:n_judge] if n_judge is not None else rubrics)}
        rows, judge_coverage = grade_with_llm_judge(judge, rubrics, [a for a in everything if a["prompt_id"] in judged],
                                                    explanation_chars=judge_explanation_chars, progress=progress)
        graded += rows
        clock.lap("grade_judge")
    graded += grade_with_gold(rubrics, [{**r, "criteria_met": r["gold_criteria_met"]} for r in refs])
    write_jsonl(out / "graded.jsonl", graded)
    summary = summarize(graded, baseline="base")
    grader_agreement = agreement(graded, rubrics)
    probes = None
    if n_probe > 0:
        probes = run_probes(rm.score_batch, load_split("bench"), gold_responses(load_candidates(), n_probe))
        write_json(out / "probes.json", probes)
        clock.lap("probes")
    independence = audit(training_rubrics(ws), rubrics)
    metrics_file, policy_file = ws / "reward" / "metrics.json", ws / "policy" / "summary.json"
    reward_metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    policy_summary = json.loads(policy_file.read_text()) if policy_file.is_file() else {}
    head = headline(summary, reward_metrics, probes)
    caveat = (f"Scale of this run: policy {model}, {len(rubrics)} benchmark items, {policy_summary.get('steps', 0)} GRPO "
              f"steps. Headline grader: {head['grader'] or 'none (only the training reward graded the policy)'}. "
              "With a small model, few steps and few items the intervals are wide: this run shows the pipeline end "
              "to end and measures what it measures; it is not evidence that the method improves a model. Claims of "
              "improvement need the full scale (configs/full.yaml).")
    params = dict(model=model, models={k: [v[0], None if v[1] is None else str(v[1])] for k, v in models.items()},
                  bench_file=bench_file, n_bench=len(rubrics), max_new_tokens=max_new_tokens, judge_model=judge_model,
                  n_judge=n_judge, n_reference=len(refs), n_probe=n_probe)
    prov = stamp(config=params)
    grading = {"headline": head, "agreement": grader_agreement, "coverage": coverage_by_grader(graded),
               "judge_coverage": judge_coverage, "monitor": policy_summary.get("monitor")}
    report = write_report(out / "report.html", summary=summary, graded=graded, audit=independence,
                          reward_metrics=reward_metrics, params=params, provenance=prov, caveat=caveat, png=png,
                          grading=grading, probes=probes)
    clock.lap("report")
    result = {"headline": head, "summary": summary, "grading": grading,
              "probes": None if probes is None else {k: v for k, v in probes.items() if k != "per_response"},
              "audit": {k: v for k, v in independence.items() if k != "items"},
              "report": report, "graded_file": str(out / "graded.jsonl"), "caveat": caveat, "parameters": params,
              "seconds": clock.laps, "provenance": prov}
    write_json(out / "audit.json", independence)
    write_json(out / "benchmark.json", result)
    return result


def step_rm_train(workspace=None, *, model: str = "embedded", backend: str = "peft", steps: int | None = None,
                  epochs: int = 1, batch_size: int = 4, micro_batch_size: int | None = None, lr: float = 2e-4,
                  max_length: int = 1024, gradient_checkpointing: bool = False, seed: int = 0,
                  lr_scheduler: str = "constant", warmup_ratio: float = 0.0, max_grad_norm: float = 1.0,
                  bf16: bool | None = None, report_to: str = "tensorboard", save_every: int = 20, resume: bool = True,
                  progress: bool = True) -> dict:
    """Reward-model training alone, on the dataset 03 saved (<workspace>/reward/dataset): the step that
    `promedical launch rm-train` runs under accelerate at full scale (one or many processes); TensorBoard
    logs under <workspace>/reward/runs (``report_to``)."""
    from datasets import load_from_disk

    from .reward_model import CriteriaRewardModel, RMConfig

    out = workspace_path(workspace) / "reward"
    if not (out / "dataset" / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"no reward dataset at {out / 'dataset'}: run notebook 03 (or step 'reward') first")
    dd = load_from_disk(str(out / "dataset"))
    config = RMConfig(model=model, backend=backend, max_steps=steps, epochs=epochs, batch_size=batch_size,
                      micro_batch_size=micro_batch_size, lr=lr, max_length=max_length,
                      gradient_checkpointing=gradient_checkpointing, seed=seed, lr_scheduler=lr_scheduler,
                      warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm, bf16=bf16, report_to=report_to,
                      save_every=save_every)
    rm = CriteriaRewardModel.load(config)
    return rm.train(list(dd["pairs"]), list(dd["pointwise"]), out, resume=resume, progress=progress)

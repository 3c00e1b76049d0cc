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
from .step_config import (BenchmarkStepConfig, GenerateStepConfig, GRPOStepConfig, ReviewStepConfig, RewardStepConfig,
                          RMTrainStepConfig, build)
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


def step_generate(workspace=None, config: GenerateStepConfig | None = None, **params) -> dict:
    """01: draft rubrics for n training instructions and add them to the store as drafts
    (``config`` and/or ``params``: GenerateStepConfig)."""
    c = build(GenerateStepConfig, config, params)
    ws = workspace_path(workspace)
    store = open_store(ws)
    instructions = workspace_split(ws, "train")
    items = list(instructions)
    random.Random(c.seed).shuffle(items)
    items = items[:c.n_instructions]
    # few-shot pool: reviewed rubrics first (they supersede a reference of the same id), then the
    # references that came with the workspace's instructions, then the kit's own reference rubrics
    pool = FewShotPool(store.rubrics(status="approved"))
    pool.add([r for r in instructions if r.criteria])
    pool.add(load_split("train"))
    llm = make_llm(c.backend, c.model, base_url=c.base_url, cache_dir=ws / "cache" / "llm")
    out = ws / "rubrics" / "generated.jsonl"
    gen = GenParams(max_new_tokens=c.max_new_tokens, seed=c.seed, repetition_penalty=1.1)
    summary = generate_rubrics(items, llm, out, pool=pool, k=c.few_shot_k, constrained=c.constrained,
                               params=gen, progress=c.progress)
    added = store.import_rubrics(load_generated(out), author=f"generator:{c.model}", reason="LLM draft")
    summary.update(added_to_store=added, results=str(out), provenance=stamp(config=c.to_dict(), seed=c.seed))
    write_json(ws / "rubrics" / "generation_summary.json", summary)
    return summary


def step_review(workspace=None, config: ReviewStepConfig | None = None, **params) -> dict:
    """02 in batch mode: apply a reviews file and/or a policy, then export and validate reviewed rubrics
    (``config`` and/or ``params``: ReviewStepConfig)."""
    from .review import apply_policy, apply_reviews, review_analytics

    c = build(ReviewStepConfig, config, params)
    ws = workspace_path(workspace)
    store = open_store(ws)
    result: dict = {}
    if c.reviews_file:
        result["reviews"] = apply_reviews(store, c.reviews_file)
    if c.policy:
        result["policy"] = apply_policy(store, c.policy, c.reviewer)
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


def step_reward(workspace=None, config: RewardStepConfig | None = None, **params) -> dict:
    """03: candidates -> judgments -> pairs -> Explicit Criteria Injection reward model -> evaluation
    (``config`` and/or ``params``: RewardStepConfig, whose help texts say what each field does).

    ``labels``: "judge" trains on the judge's grades of candidates the policy samples (or the
    ``candidate_sources`` give); "gold" on gold per-criterion labels (``gold_labels``: a candidates JSONL
    with ``criteria_met`` per criterion of the reference rubrics); "both" on the union; "imported" on
    labels from elsewhere (``labels_file``, ``labels.load_labels``) of the sampled candidates, in place of
    the judge. The judge is measured against the benchmark's gold labels (and the imported labels)
    before anything is trained.
    ``train=False`` stops after the dataset (full scale trains with `promedical launch rm-train`)."""
    from datasets import DatasetDict, concatenate_datasets

    from .candidates import candidates_from_sources, llm_for, sample_candidates, spec_label
    from .files import read_jsonl
    from .judge import adjudication_report, agreement, grade_responses, judgments_to_grades
    from .pairs import build_datasets, save_datasets
    from .reward_model import CriteriaRewardModel
    from .rm_eval import compare, evaluate, score_with_substitutes, shuffled_criteria

    c = build(RewardStepConfig, config, params)
    ws = workspace_path(workspace)
    out = ws / "reward"
    cache = ws / "cache" / "llm"
    clock = Stopwatch()
    rubrics = training_rubrics(ws, c.n_instructions, c.seed)
    judge_model = c.judge_model or c.model
    judge = llm_for(judge_model, cache)

    # judge agreement with the gold labels first, before anything is trained on its labels
    bench, gold, eval_set = evaluation_set(ws, c.eval_labels, c.n_eval_prompts)
    gold_cands = gold[:c.n_judge_check]
    gold_judgments = grade_responses(bench, gold_cands, judge, progress=c.progress,
                                     explanation_chars=c.judge_explanation_chars)
    judge_report = agreement(gold_judgments, {(g["prompt_id"], g["response_id"]): g["criteria_met"] for g in gold_cands},
                             {r.id: r for r in bench})
    judge_report["adjudication"] = adjudication_report(judge, bench, gold, c.n_adjudicate,
                                                       explanation_chars=c.judge_explanation_chars)
    clock.lap("judge_check")

    parts, cards = [], {}
    if c.labels in ("judge", "both", "imported"):
        if c.candidate_sources:
            candidates = candidates_from_sources(rubrics, c.candidate_sources, seed=c.seed, cache_dir=cache,
                                                 out_path=out / "candidates.jsonl",
                                                 # a local judge model is reused, not loaded twice
                                                 llms={f"transformers:{judge_model}": judge}
                                                 if isinstance(judge_model, str) else None)
        else:
            policy = judge if judge_model == c.model else make_llm("transformers", c.model, cache_dir=cache)
            candidates = sample_candidates(rubrics, [(policy, t) for t in c.temperatures], max_new_tokens=c.max_new_tokens,
                                           seed=c.seed, out_path=out / "candidates.jsonl")
        clock.lap("candidates")
        sources = ({"candidates": [spec_label(x) for x in c.candidate_sources]} if c.candidate_sources else
                   {"policy": c.model, "temperatures": list(c.temperatures)})
        if c.labels == "imported":
            dd, cards["imported"], judge_report["imported"] = imported_dataset(
                rubrics, candidates, c.labels_file, judge, n_judge_check=c.n_judge_check,
                explanation_chars=c.judge_explanation_chars, progress=c.progress)
            cards["imported"]["sources"] = sources
        else:
            judgments = grade_responses(rubrics, candidates, judge, progress=c.progress,
                                        explanation_chars=c.judge_explanation_chars)
            dd, cards["judge"] = build_datasets(rubrics, candidates, judgments_to_grades(judgments))
            cards["judge"]["sources"] = {**sources, "judge": spec_label(judge_model)}
        parts.append(dd)
        clock.lap("labels")
    if c.labels in ("gold", "both"):
        path = Path(c.gold_labels) if c.gold_labels else DATA_DIR / "train" / "candidates.jsonl"
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
    card = cards[c.labels] if c.labels != "both" else {"labels": "both", **cards}
    save_datasets(dd, card, out / "dataset")
    if not c.train:
        metrics = {"judge_agreement": judge_report, "dataset_card": card, "eval_set": eval_set, "seconds": clock.laps}
        write_json(out / "metrics.json", metrics)
        return metrics

    rm_config = c.rm_config()
    rm = CriteriaRewardModel.load(rm_config)
    gold_prompts = {g["prompt_id"] for g in gold}
    eval_rubrics = [r for r in bench if r.id in gold_prompts]
    swap = shuffled_criteria(eval_rubrics, seed=c.seed)

    def measure():  # own and shuffled criteria (does the model read the criterion?)
        own, shuffled = score_with_substitutes(rm.score_batch, bench, gold, swap, progress=c.progress)
        return own, evaluate(own, bench, gold, shuffled=shuffled)

    base_rewards, base = measure()  # LoRA at init = base model
    clock.lap("eval_base")
    pairs, point = list(dd["pairs"]), list(dd["pointwise"])
    train_stats = rm.train(pairs, point, out, progress=c.progress) if pairs or point else {"steps": 0}
    clock.lap("train")
    trained_rewards, trained = measure()
    clock.lap("eval_trained")
    metrics = {"base": base, "trained": trained, "trained_vs_base": compare(base_rewards, trained_rewards, bench, gold),
               "judge_agreement": judge_report, "dataset_card": card, "eval_set": eval_set, "train": train_stats,
               "seconds": clock.laps,
               "provenance": stamp(config={**c.to_dict(), "rm": rm_config.to_dict()}, seed=c.seed)}
    write_json(out / "metrics.json", metrics)
    return metrics


def evaluation_set(workspace, eval_labels: str | None = None, n_prompts: int | None = None):
    """(bench rubrics, gold-labelled candidates of the first ``n_prompts`` prompts in file order, description):
    the workspace's bench rubrics with the candidates of ``eval_labels`` (default: the kit's), matched by id or
    lineage; when none match (a corpus whose bench has no gold labels yet), the kit's bench and its gold."""
    from .data import load_candidates
    from .files import read_jsonl

    path = Path(eval_labels) if eval_labels else DATA_DIR / "bench" / "candidates.jsonl"
    bench = [r for r in workspace_split(workspace, "bench") if r.criteria]
    gold = match_prompt_ids(bench, read_jsonl(path))
    source = f"workspace bench, labels {path}"
    if not gold:
        if eval_labels:
            raise ValueError(f"eval_labels {path}: none of its prompt ids is a rubric of the workspace's bench")
        bench, gold, source = load_split("bench"), load_candidates(), "the kit's bench (data/bench): the workspace " \
                                                                      "bench has no gold-labelled candidates"
    keep = set(list(dict.fromkeys(g["prompt_id"] for g in gold))[:n_prompts])  # the first n prompts, in file order
    gold = [g for g in gold if g["prompt_id"] in keep]
    return bench, gold, {"source": source, "prompts": len(keep), "candidates": len(gold)}


def imported_dataset(rubrics, candidates: list[dict], labels_file: str, judge, *, n_judge_check: int,
                     explanation_chars: int, progress: bool):
    """(DatasetDict, card, judge agreement) from labels brought from elsewhere for these candidates: the
    candidates without a label are left out (counted in the card); the judge grades the first
    ``n_judge_check`` labelled ones and is measured against the imported labels."""
    from .judge import agreement, grade_responses
    from .labels import load_labels
    from .pairs import build_datasets

    by_id = {r.id: r for r in rubrics}
    imported = load_labels(labels_file, by_id)
    labelled = [x for x in candidates if (x["prompt_id"], x["response_id"]) in imported]
    if not labelled:
        wanted = ", ".join(f"{x['prompt_id']}/{x['response_id']}" for x in candidates[:4])
        raise ValueError(f"labels_file {labels_file}: labels none of the {len(candidates)} candidates "
                         f"(prompt_id/response_id, e.g. {wanted})")
    dd, card = build_datasets(by_id, labelled, imported)
    card.update(labels_file=str(labels_file), unlabelled_candidates=len(candidates) - len(labelled),
                labels_for_other_responses=len(imported) - len(labelled))
    checked = labelled[:n_judge_check]
    judgments = grade_responses(rubrics, checked, judge, progress=progress, explanation_chars=explanation_chars)
    report = agreement(judgments, {k: imported[k] for k in ((x["prompt_id"], x["response_id"]) for x in checked)}, by_id)
    return dd, card, report


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
    return rm.freeze()


def step_grpo(workspace=None, config: GRPOStepConfig | None = None, **params) -> dict:
    """04: GRPO on the policy, rewarded by the frozen reward model through the hierarchical formula
    (``config`` and/or ``params``: GRPOStepConfig = GRPOSettings + the step's own fields).

    Writes policy/adapter, policy/log.json and policy/curves.html. Reward-hacking monitor
    (``promedical.monitor``): every ``monitor_every`` steps the ``n_monitor_prompts`` training prompts with
    the most machine checks are answered greedily (``monitor_max_new_tokens``) and graded by the RM and by
    the checks (+ the LLM ``monitor_judge`` when set); rows in policy/log.json, figure in
    policy/monitor.html. ``n_monitor_prompts=0`` turns it off.
    """
    from .grpo import RubricReward, train_policy
    from .monitor import PREFIX, hacking_monitor, probe_rubrics
    from .plots import live_curves

    c = build(GRPOStepConfig, config, params)
    ws = workspace_path(workspace)
    settings = c.settings()
    rm = load_reward_model(ws, c.reward_adapter)
    rubrics = training_rubrics(ws, c.n_instructions, c.seed)
    out = ws / "policy"
    callbacks = [live_curves(out / "curves.html", display=c.live)]
    if c.n_monitor_prompts > 0:
        judge = make_llm("transformers", c.monitor_judge, cache_dir=ws / "cache" / "llm") if c.monitor_judge else None
        probes = probe_rubrics(rubrics, c.n_monitor_prompts)
        callbacks.append(hacking_monitor(RubricReward(rm.score_batch, {r.id: r for r in probes}, settings.reward_config(),
                                                      settings.mode), probes, every=c.monitor_every,
                                         max_new_tokens=c.monitor_max_new_tokens, judge=judge,
                                         html_path=out / "monitor.html"))
    summary = train_policy(settings, rubrics, rm.score_batch, out, resume=c.resume, callbacks=callbacks)
    if c.n_monitor_prompts > 0:
        import json

        history = json.loads((out / "log.json").read_text(encoding="utf-8"))["history"]
        rows = [{k.removeprefix(PREFIX): v for k, v in h.items() if k != f"{PREFIX}answers"}
                for h in history if f"{PREFIX}gap" in h]
        summary["monitor"] = {"every": c.monitor_every, "prompts": [r.id for r in probes], "judge": c.monitor_judge,
                              "rows": rows, "html": str(out / "monitor.html") if rows else None}
    summary["reward_model"] = str(c.reward_adapter or ws / "reward" / "adapter")
    summary["provenance"] = stamp(config=c.to_dict(), seed=c.seed)
    write_json(out / "summary.json", summary)
    return summary


def step_benchmark(workspace=None, config: BenchmarkStepConfig | None = None, **params) -> dict:
    """05: base vs aligned policy (and any other model/adapter) on the held-out benchmark, graded by
    graders that did not train the policy (machine checks; the LLM ``judge_model`` when set; gold labels
    on the reference answers) and, labelled circular, by the training reward model; how the graders agree;
    the gameability probes of the reward model; statistics, independence audit, HTML report
    (``config`` and/or ``params``: BenchmarkStepConfig).
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

    c = build(BenchmarkStepConfig, config, params)
    ws = workspace_path(workspace)
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
        from .candidates import llm_for

        judge = llm_for(c.judge_model, ws / "cache" / "llm")  # a model spec, or a source dict (any backend)
        judged = {r.id for r in (rubrics[:c.n_judge] if c.n_judge is not None else rubrics)}
        rows, judge_coverage = grade_with_llm_judge(judge, rubrics, [a for a in everything if a["prompt_id"] in judged],
                                                    explanation_chars=c.judge_explanation_chars, progress=c.progress)
        graded += rows
        clock.lap("grade_judge")
    graded += grade_with_gold(rubrics, [{**r, "criteria_met": r["gold_criteria_met"]} for r in refs])
    write_jsonl(out / "graded.jsonl", graded)
    summary = summarize(graded, baseline="base")
    grader_agreement = agreement(graded, rubrics)
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


def step_rm_train(workspace=None, config: RMTrainStepConfig | None = None, **params) -> dict:
    """Reward-model training alone, on the dataset 03 saved (<workspace>/reward/dataset): the step that
    `promedical launch rm-train` runs under accelerate at full scale (one or many processes); TensorBoard
    logs under <workspace>/reward/runs (``report_to``). ``config`` and/or ``params``: RMTrainStepConfig."""
    from datasets import load_from_disk

    from .reward_model import CriteriaRewardModel

    c = build(RMTrainStepConfig, config, params)
    out = workspace_path(workspace) / "reward"
    if not (out / "dataset" / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"no reward dataset at {out / 'dataset'}: run notebook 03 (or step 'reward') first")
    dd = load_from_disk(str(out / "dataset"))
    rm = CriteriaRewardModel.load(c.rm_config())
    return rm.train(list(dd["pairs"]), list(dd["pointwise"]), out, resume=c.resume, progress=c.progress)

"""Stage 03 as phases: candidates, the judge check, labels, pairs, training, evaluation."""
from __future__ import annotations

from pathlib import Path

from promedical.core.config import build
from promedical.core.data import load_split
from promedical.core.files import write_json
from promedical.core.provenance import DATA_DIR, stamp
from promedical.core.workspace import Stopwatch, Workspace
from promedical.models.llm import make_llm
from promedical.reward.config import RewardStepConfig, RMTrainStepConfig
from promedical.rubrics.selection import match_prompt_ids, training_rubrics, workspace_split


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

    from promedical.core.files import read_jsonl
    from promedical.models.sources import llm_for, spec_label
    from promedical.reward.candidates import candidates_from_sources, sample_candidates
    from promedical.reward.evaluation import compare, evaluate, score_with_substitutes, shuffled_criteria
    from promedical.reward.judge import adjudication_report, grade_responses, judge_agreement, judgments_to_grades
    from promedical.reward.pairs import build_datasets, save_datasets
    from promedical.reward.scorer import CriteriaRewardModel
    from promedical.reward.trainer import train_reward_model

    c = build(RewardStepConfig, config, params)
    ws = Workspace.of(workspace)
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
    judge_report = judge_agreement(gold_judgments, {(g["prompt_id"], g["response_id"]): g["criteria_met"] for g in gold_cands},
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
    train_stats = train_reward_model(rm, pairs, point, out, progress=c.progress) if pairs or point else {"steps": 0}
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
    from promedical.core.data import load_candidates
    from promedical.core.files import read_jsonl

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
    from promedical.reward.judge import grade_responses, judge_agreement
    from promedical.reward.labels import load_labels
    from promedical.reward.pairs import build_datasets

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
    report = judge_agreement(judgments, {k: imported[k] for k in ((x["prompt_id"], x["response_id"]) for x in checked)}, by_id)
    return dd, card, report


def load_reward_model(workspace=None, adapter: str | Path | None = None):
    """The reward model trained by 03 (or any adapter directory holding an rm_config.json), frozen."""
    import json

    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel

    adapter = Path(adapter) if adapter else Workspace.of(workspace) / "reward" / "adapter"
    config_file = adapter / "rm_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no reward-model adapter at {adapter} (missing rm_config.json): "
                                "run notebook 03 first, or pass the adapter directory")
    rm = CriteriaRewardModel.load(RMConfig(**json.loads(config_file.read_text(encoding="utf-8"))), adapter=adapter)
    return rm.freeze()


def step_rm_train(workspace=None, config: RMTrainStepConfig | None = None, **params) -> dict:
    """Reward-model training alone, on the dataset 03 saved (<workspace>/reward/dataset): the step that
    `promedical launch rm-train` runs under accelerate at full scale (one or many processes); TensorBoard
    logs under <workspace>/reward/runs (``report_to``). ``config`` and/or ``params``: RMTrainStepConfig."""
    from datasets import load_from_disk

    from promedical.reward.scorer import CriteriaRewardModel
    from promedical.reward.trainer import train_reward_model

    c = build(RMTrainStepConfig, config, params)
    out = Workspace.of(workspace) / "reward"
    if not (out / "dataset" / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"no reward dataset at {out / 'dataset'}: run notebook 03 (or step 'reward') first")
    dd = load_from_disk(str(out / "dataset"))
    rm = CriteriaRewardModel.load(c.rm_config())
    return train_reward_model(rm, list(dd["pairs"]), list(dd["pointwise"]), out, resume=c.resume, progress=c.progress)

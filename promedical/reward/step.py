"""Stage 03 as phases: candidates, the judge check, labels, pairs, training, evaluation.

Each phase is a public function that takes values and returns values, and writes its artefact to the
workspace; ``step_reward`` is their composition and notebook 03 calls them one cell each::

    rubrics = training_rubrics(ws, config.n_instructions, config.seed)                # rubrics.selection
    candidates = sample_candidates(ws, config, rubrics)                               # reward/candidates.jsonl
    gold = gold_candidates(ws, config, rubrics)                # labels=gold|both: the gold-labelled train candidates
    judge_check = check_judge(ws, config, rubrics, candidates)                        # reward/judge_check.json
    labels = label_candidates(ws, config, rubrics, candidates)                        # reward/labels.jsonl
    dataset, card = build_preference_dataset(ws, config, rubrics, candidates, labels, gold)  # reward/dataset
    train_stats = train_adapter(ws, config, dataset)                                  # reward/adapter
    ablation_stats = train_ablation(ws, config, dataset)        # ablation=true: reward/ablation/adapter
    evaluation = evaluate_reward_model(ws, config)                                    # reward/evaluation.json
    metrics = write_metrics(ws, config, judge_check, card, train_stats, evaluation,   # reward/metrics.json
                            ablation_stats=ablation_stats)

Between two phases a value can be changed — drop a candidate, fix a label — and the next phase uses
what it is given. The costly phases (sampling, judging, training, evaluation) are ``core.phases.Phase``s:
run again with the same inputs and config they say so and load their artefact instead of recomputing.
This module stays light: torch, transformers and datasets load inside the phases.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace

from promedical.core.config import build
from promedical.core.files import read_jsonl, write_json, write_jsonl
from promedical.core.phases import Phase
from promedical.core.provenance import stamp
from promedical.core.timing import Stopwatch
from promedical.core.workspace import Workspace
from promedical.reward.config import RewardStepConfig, RMConfig, RMTrainStepConfig
from promedical.reward.inputs import (
    LLMs,
    evaluation_set,
    gold_labels_path,
    judge_spec,
    read_labels,
    reference_rubrics,
    write_labels,
)
from promedical.reward.labels import Labels
from promedical.rubrics.selection import match_prompt_ids, training_rubrics


def _settings(config, *names) -> dict:
    """The config fields a phase reads (part of its reuse key)."""
    return {name: getattr(config, name) for name in names}


def _key(candidate: dict) -> tuple[str, str]:
    return candidate["prompt_id"], candidate["response_id"]


# ---------------------------------------------------------------- the phases
def sample_candidates(workspace, config: RewardStepConfig, rubrics, *, llms: LLMs | None = None) -> list[dict]:
    """The candidate responses to label: one per (instruction, temperature) from ``model``, or one per
    (instruction, source) from ``candidate_sources`` -> reward/candidates.jsonl. labels=gold samples
    none: the gold candidates come with their labels (``gold_candidates``)."""
    from promedical.models.sources import parse_sources
    from promedical.reward.candidates import candidates_from_sources, policy_candidates

    ws = Workspace.of(workspace)
    if config.labels == "gold":
        return []
    phase = Phase(ws, "reward.candidates", inputs=rubrics, config=_settings(
        config, "model", "temperatures", "candidate_sources", "max_new_tokens", "seed"))
    if phase.reusable():
        return read_jsonl(ws.reward_candidates)
    llms = llms or LLMs(ws)
    if config.candidate_sources:
        local = {s.label(): llms(s.model) for s in parse_sources(config.candidate_sources) if s.kind == "transformers"}
        candidates = candidates_from_sources(rubrics, config.candidate_sources, seed=config.seed,
                                             cache_dir=ws.llm_cache, llms=local)
    else:
        policy = llms(config.model)
        candidates = policy_candidates(rubrics, [(policy, t) for t in config.temperatures],
                                       max_new_tokens=config.max_new_tokens, seed=config.seed)
    write_jsonl(ws.reward_candidates, candidates)
    phase.done(ws.reward_candidates)
    return candidates


def gold_candidates(workspace, config: RewardStepConfig, rubrics) -> list[dict]:
    """labels=gold or both: the gold-labelled train candidates of these instructions (``gold_labels``), each
    with its ``criteria_met`` as written for the instruction's reference rubric; [] for the other label
    sources. Drop one or edit its ``criteria_met`` before ``build_preference_dataset`` and the pairs follow."""
    if config.labels not in ("gold", "both"):
        return []
    return match_prompt_ids(reference_rubrics(workspace, rubrics), read_jsonl(gold_labels_path(config)))


def check_judge(workspace, config: RewardStepConfig, rubrics=(), candidates=(), *, llms: LLMs | None = None) -> dict:
    """The judge measured before anything trains on its grades -> reward/judge_check.json: its agreement
    with the gold labels of the first ``n_judge_check`` held-out benchmark candidates, the swap
    consistency of ``n_adjudicate`` pairwise adjudications and, with labels=imported, its agreement
    with the imported labels of the first ``n_judge_check`` labelled candidates (``"imported"``)."""
    from promedical.reward.judge import grade_responses
    from promedical.reward.judge_quality import judge_agreement
    from promedical.reward.labels import load_labels
    from promedical.reward.pairwise_judge import adjudication_report

    ws = Workspace.of(workspace)
    bench, gold, _ = evaluation_set(ws, config.eval_labels, config.n_eval_prompts)
    checked = gold[:config.n_judge_check]
    imported, labelled = {}, []
    if config.labels == "imported":
        imported = load_labels(config.labels_file, rubrics)
        labelled = [x for x in candidates if _key(x) in imported][:config.n_judge_check]
    settings = {"judge": judge_spec(config), **_settings(config, "n_judge_check", "n_adjudicate",
                                                          "judge_explanation_chars")}
    phase = Phase(ws, "reward.judge_check", inputs=(bench, gold, labelled, [imported[_key(x)] for x in labelled]),
                  config=settings)
    if phase.reusable():
        return json.loads(ws.reward_judge_check.read_text(encoding="utf-8"))
    judge = (llms or LLMs(ws))(judge_spec(config)) if checked or labelled or config.n_adjudicate else None

    def agreement(items, labels, rubrics_):
        judgments = grade_responses(rubrics_, items, judge, progress=config.progress,
                                    explanation_chars=config.judge_explanation_chars)
        return judge_agreement(judgments, labels, {r.id: r for r in rubrics_})

    report = agreement(checked, {_key(g): g["criteria_met"] for g in checked}, bench)
    report["adjudication"] = adjudication_report(judge, bench, gold, config.n_adjudicate,
                                                 explanation_chars=config.judge_explanation_chars)
    if config.labels == "imported":
        report["imported"] = agreement(labelled, {_key(x): imported[_key(x)] for x in labelled}, rubrics)
    write_json(ws.reward_judge_check, report)
    phase.done(ws.reward_judge_check)
    return report


def label_candidates(workspace, config: RewardStepConfig, rubrics, candidates: list[dict], *,
                     llms: LLMs | None = None) -> Labels:
    """{(prompt_id, response_id): {criterion_id: met or None}} for the candidates -> reward/labels.jsonl
    (one row per candidate; None is unknown, never "not met"): the judge's grades (labels=judge or both;
    every judgment with its explanation -> reward/judgments.jsonl) or the imported ones (labels_file;
    candidates it does not label are left out). labels=gold: none (the gold candidates carry theirs)."""
    from promedical.reward.judge import grade_responses, judgments_to_grades
    from promedical.reward.labels import load_labels

    ws = Workspace.of(workspace)
    if config.labels == "gold":
        return {}
    if config.labels == "imported":
        imported = load_labels(config.labels_file, rubrics)
        labels = {_key(x): imported[_key(x)] for x in candidates if _key(x) in imported}
        if not labels:
            wanted = ", ".join(f"{x['prompt_id']}/{x['response_id']}" for x in candidates[:4])
            raise ValueError(f"labels_file {config.labels_file}: labels none of the {len(candidates)} candidates "
                             f"(prompt_id/response_id, e.g. {wanted})")
        write_labels(ws, labels)
        return labels
    phase = Phase(ws, "reward.judgments", inputs=(rubrics, candidates),
                  config={"judge": judge_spec(config), "judge_explanation_chars": config.judge_explanation_chars})
    if phase.reusable():
        return read_labels(ws.reward_labels)
    judge = (llms or LLMs(ws))(judge_spec(config))
    judgments = grade_responses(rubrics, candidates, judge, progress=config.progress,
                                explanation_chars=config.judge_explanation_chars)
    write_jsonl(ws.reward_judgments, [asdict(j) for j in judgments])
    labels = judgments_to_grades(judgments)
    write_labels(ws, labels)
    phase.done(ws.reward_judgments, ws.reward_labels)
    return labels


def build_preference_dataset(workspace, config: RewardStepConfig, rubrics, candidates: list[dict], labels: Labels,
                             gold: list[dict] | None = None):
    """(DatasetDict {"pairs", "pointwise"}, card) -> reward/dataset: the labelled candidates ordered by the
    lexicographic rule into pairs, each expanded per criterion, plus pointwise labels (a candidate without
    labels is left out and counted); labels=gold or both adds the gold-labelled candidates (``gold``; None:
    ``gold_candidates``), read with the reference rubrics their labels were written for."""
    from datasets import DatasetDict, concatenate_datasets

    from promedical.models.sources import spec_label
    from promedical.reward.labels import load_labels
    from promedical.reward.pairs import build_datasets, save_datasets

    ws = Workspace.of(workspace)
    parts, cards = [], {}
    if config.labels != "gold":
        labelled = [x for x in candidates if _key(x) in labels]
        dd, card = build_datasets(rubrics, labelled, {_key(x): labels[_key(x)] for x in labelled})
        card["unlabelled_candidates"] = len(candidates) - len(labelled)
        card["sources"] = ({"candidates": [spec_label(x) for x in config.candidate_sources]} if config.candidate_sources
                           else {"policy": config.model, "temperatures": list(config.temperatures)})
        if config.labels == "imported":
            card.update(labels_file=str(config.labels_file),
                        labels_for_other_responses=len(load_labels(config.labels_file, rubrics)) - len(labelled))
        else:
            card["sources"]["judge"] = spec_label(judge_spec(config))
        parts.append(dd)
        cards["imported" if config.labels == "imported" else "judge"] = card
    if config.labels in ("gold", "both"):
        gold = gold_candidates(ws, config, rubrics) if gold is None else gold
        dd, cards["gold"] = build_datasets(reference_rubrics(ws, rubrics), gold)
        cards["gold"]["sources"] = {"gold_labels": str(gold_labels_path(config))}
        parts.append(dd)
    dataset = DatasetDict({k: concatenate_datasets([d[k] for d in parts]) for k in ("pairs", "pointwise")})
    card = {"labels": "both", **cards} if config.labels == "both" else next(iter(cards.values()))
    save_datasets(dataset, card, ws.reward_dataset)
    return dataset, card


def train_adapter(workspace, config: RewardStepConfig, dataset) -> dict:
    """The reward model's LoRA adapter trained on the dataset (BT + pointwise BCE + contrasts, the
    ``rm`` settings) -> reward/adapter, reward/train_log.json (per-step losses), TensorBoard logs under
    reward/runs; returns the training stats. A fresh start: the checkpoints of another run are not resumed.
    With ``val_prompts``, the safety-first selection (``promedical/reward/selection.py``) chooses the saved
    weights and the veto threshold on a validation split of the training prompts (stats["selection"])."""
    ws = Workspace.of(workspace)
    return _train(ws, config, dataset, config.reward_model(), "reward.train", ws.reward, ws.reward_adapter,
                  ws.reward_train_log)


def train_ablation(workspace, config: RewardStepConfig, dataset) -> dict | None:
    """With ``ablation``: the paper's ablation without explicit criteria (``rm`` with criteria="none": the
    same backbone, data, seed, steps and selection; instruction + response only, Bradley-Terry on the overall
    pairs and the BCE on the overall label) -> reward/ablation/adapter, its train_log.json and runs/; its
    training stats (None without ``ablation``)."""
    if not config.ablation:
        return None
    ws = Workspace.of(workspace)
    return _train(ws, config, dataset, replace(config.reward_model(), criteria="none"), "reward.ablation",
                  ws.reward_ablation, ws.reward_ablation_adapter, ws.reward_ablation_train_log)


def _train(ws: Workspace, config: RewardStepConfig, dataset, rm_config: RMConfig, name: str, out_dir, adapter,
           train_log) -> dict:
    """Train one reward model (a phase: reused when the dataset and settings are unchanged)."""
    from promedical.reward.scorer import CriteriaRewardModel
    from promedical.reward.trainer import train_reward_model

    phase = Phase(ws, name, inputs=dataset, config=(rm_config, _settings(config, "val_prompts", "select_at")))
    if phase.reusable():
        return json.loads(train_log.read_text(encoding="utf-8"))["stats"]
    rm = CriteriaRewardModel.load(rm_config)
    selection = None
    if config.val_prompts:
        from promedical.reward.selection import SafetyFirstSelection, split_validation

        dataset, rubrics, candidates = split_validation(dataset, config.val_prompts, seed=rm_config.seed)
        selection = SafetyFirstSelection(rm, rubrics, candidates, config.select_at)
    stats = train_reward_model(rm, list(dataset["pairs"]), list(dataset["pointwise"]), out_dir, resume=False,
                               progress=config.progress, selection=selection)
    phase.done(adapter, train_log)
    return stats


def evaluate_reward_model(workspace, config: RewardStepConfig) -> dict:
    """Base vs trained reward model (and, with ``ablation``, the ablation without criteria) on the held-out
    gold candidates -> reward/evaluation.json: every metric with its prompt-clustered CI
    (``evaluation.evaluate``), each also read with a same-tier criterion of another rubric, trained - base
    and trained - ablation paired over prompts, and ``reads_criterion`` (``evaluation.criterion_verdict``:
    which test decided it, on how many instances). The base row is the untrained LoRA (its B matrices start
    at zero: the base model itself), loaded afresh; its scores do not depend on the seed."""
    from promedical.reward.evaluation import (
        compare,
        criterion_verdict,
        evaluate,
        score_with_substitutes,
        shuffled_criteria,
    )
    from promedical.reward.scorer import CriteriaRewardModel

    ws = Workspace.of(workspace)
    adapters = {"trained": ws.reward_adapter, **({"ablation": ws.reward_ablation_adapter} if config.ablation else {})}
    for name, adapter in adapters.items():
        if not (adapter / "rm_config.json").is_file():
            raise FileNotFoundError(f"no {name} reward model at {adapter}: run "
                                    f"{'train_adapter' if name == 'trained' else 'train_ablation'} first")
    configs = {name: RMConfig(**json.loads((a / "rm_config.json").read_text(encoding="utf-8")))
               for name, a in adapters.items()}
    # the veto thresholds the safety-first selection chose on the validation split (0.5 without it)
    logs = {"trained": ws.reward_train_log, "ablation": ws.reward_ablation_train_log}
    selections = {name: json.loads(logs[name].read_text(encoding="utf-8"))["stats"].get("selection")
                  if logs[name].is_file() else None for name in adapters}
    thresholds = {name: sel["veto_threshold"] if sel else 0.5 for name, sel in selections.items()}
    thresholds["base"] = selections["trained"]["base_veto_threshold"] if selections["trained"] else 0.5
    bench, gold, eval_set = evaluation_set(ws, config.eval_labels, config.n_eval_prompts)
    weights = {name: sorted(p for p in a.iterdir() if p.suffix in (".safetensors", ".bin")) for name, a in adapters.items()}
    phase = Phase(ws, "reward.evaluation", inputs=(bench, gold, weights, configs, thresholds),
                  config=_settings(config, "seed", "ablation"))
    if phase.reusable():
        return json.loads(ws.reward_evaluation.read_text(encoding="utf-8"))
    gold_prompts = {g["prompt_id"] for g in gold}
    swap = shuffled_criteria([r for r in bench if r.id in gold_prompts], seed=config.seed)

    def measure(rm, name):  # own and shuffled criteria from the same scoring passes
        own, shuffled = score_with_substitutes(rm.score_batch, bench, gold, swap, progress=config.progress)
        return own, evaluate(own, bench, gold, shuffled=shuffled, veto_threshold=thresholds[name])

    rewards, evaluation = {}, {}
    rewards["base"], evaluation["base"] = measure(CriteriaRewardModel.load(configs["trained"]), "base")
    for name, adapter in adapters.items():
        rewards[name], evaluation[name] = measure(CriteriaRewardModel.load(configs[name], adapter=adapter), name)
    opponents = ["base", *(["ablation"] if config.ablation else [])]
    for opponent in opponents:
        evaluation[f"trained_vs_{opponent}"] = compare(rewards[opponent], rewards["trained"], bench, gold,
                                                       veto_thresholds=(thresholds[opponent], thresholds["trained"]))
    if any(selections.values()):  # val_prompts > 0: what the safety-first selection kept
        evaluation["selection"] = {name: {k: sel[k] for k in ("step", "eligible", "why", "veto_threshold")}
                                   for name, sel in selections.items()}
    evaluation["reads_criterion"] = criterion_verdict({o: evaluation[f"trained_vs_{o}"] for o in opponents},
                                                      evaluation["trained"].get("criterion_sensitivity"))
    evaluation["eval_set"] = eval_set
    write_json(ws.reward_evaluation, evaluation)
    phase.done(ws.reward_evaluation)
    return evaluation


def write_metrics(workspace, config: RewardStepConfig, judge_check: dict, dataset_card: dict,
                  train_stats: dict | None = None, evaluation: dict | None = None, *,
                  seconds: dict | None = None, ablation_stats: dict | None = None) -> dict:
    """The stage's summary -> reward/metrics.json: the judge check, the dataset card, the evaluation set
    and, when trained, the training stats (``ablation_stats``: the ablation's), base vs trained (vs the
    ablation) and ``reads_criterion`` with the test that decided it (``seconds`` per phase when timed)."""
    ws = Workspace.of(workspace)
    metrics = {"judge_agreement": judge_check, "dataset_card": dataset_card,
               "eval_set": evaluation_set(ws, config.eval_labels, config.n_eval_prompts)[2]}
    if evaluation is not None:
        metrics.update(evaluation)
    if train_stats is not None:
        metrics["train"] = train_stats
    if ablation_stats is not None:
        metrics["train_ablation"] = ablation_stats
    if seconds is not None:
        metrics["seconds"] = seconds
    metrics["provenance"] = stamp(config={**config.to_dict(), "rm": config.reward_model().to_dict()}, seed=config.seed)
    write_json(ws.reward_metrics, metrics)
    return metrics


def step_reward(workspace=None, config: RewardStepConfig | None = None, **params) -> dict:
    """03, every phase in turn (the module doc): candidates -> the judge check -> labels -> criterion pairs
    -> the Explicit Criteria Injection reward model -> evaluation (``config`` and/or ``params``:
    RewardStepConfig, whose help texts say what each field does).

    ``labels``: "judge" trains on the judge's grades of candidates the policy samples (or the
    ``candidate_sources`` give); "gold" on gold per-criterion labels (``gold_labels``); "both" on the
    union; "imported" on labels from elsewhere (``labels_file``) of the sampled candidates, in place of
    the judge. The judge is measured against the benchmark's gold labels (and the imported labels)
    before anything is trained. ``train=False`` stops after the dataset (full scale trains with
    `promedical launch rm-train`)."""
    c = build(RewardStepConfig, config, params)
    ws = Workspace.of(workspace)
    llms = LLMs(ws)
    clock = Stopwatch()
    rubrics = training_rubrics(ws, c.n_instructions, c.seed)
    candidates = sample_candidates(ws, c, rubrics, llms=llms)
    gold = gold_candidates(ws, c, rubrics)
    clock.lap("candidates")
    judge_check = check_judge(ws, c, rubrics, candidates, llms=llms)
    clock.lap("judge_check")
    labels = label_candidates(ws, c, rubrics, candidates, llms=llms)
    clock.lap("labels")
    dataset, card = build_preference_dataset(ws, c, rubrics, candidates, labels, gold)
    clock.lap("dataset")
    llms.release()  # the generation models are done with before the reward model loads
    train_stats = ablation_stats = evaluation = None
    if c.train:
        train_stats = train_adapter(ws, c, dataset)
        clock.lap("train")
        ablation_stats = train_ablation(ws, c, dataset)
        if c.ablation:
            clock.lap("train_ablation")
        evaluation = evaluate_reward_model(ws, c)
        clock.lap("evaluation")
    return write_metrics(ws, c, judge_check, card, train_stats, evaluation, seconds=clock.laps,
                         ablation_stats=ablation_stats)


def step_rm_train(workspace=None, config: RMTrainStepConfig | None = None, **params) -> dict:
    """Reward-model training alone, on the dataset 03 saved (<workspace>/reward/dataset): the step that
    `promedical launch rm-train` runs under accelerate at full scale (one or many processes); TensorBoard
    logs under <workspace>/reward/runs (``report_to``). ``config`` and/or ``params``: RMTrainStepConfig."""
    from datasets import load_from_disk

    from promedical.reward.scorer import CriteriaRewardModel
    from promedical.reward.trainer import train_reward_model

    c = build(RMTrainStepConfig, config, params)
    ws = Workspace.of(workspace)
    if not (ws.reward_dataset / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"no reward dataset at {ws.reward_dataset}: run notebook 03 (or step 'reward') first")
    dd = load_from_disk(str(ws.reward_dataset))
    rm = CriteriaRewardModel.load(c.project(RMConfig))
    return train_reward_model(rm, list(dd["pairs"]), list(dd["pointwise"]), ws.reward, resume=c.resume,
                              progress=c.progress)

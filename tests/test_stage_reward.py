"""Stage 03 both ways — `step_reward` and notebook 03 through papermill — on a tiny config: the same
artefacts; a phase re-run with unchanged inputs reuses its artefact, a changed config field or an edited
candidate runs it again; and the reward model's settings as a nested config (`rm: {...}`, `rm.max_steps`)."""
import json
from dataclasses import replace

import pytest

from promedical.reward.config import RewardStepConfig, RMConfig, RMTrainStepConfig

TINY = dict(model="tiny-qwen3", n_instructions=2, max_new_tokens=16, n_judge_check=1, judge_explanation_chars=8,
            n_eval_prompts=2, n_adjudicate=0, rm={"max_steps": 2, "batch_size": 1, "lora_layers": 1}, progress=False)


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def artefacts(ws):
    """The stage's files, without the trackers' event logs and the trainer's checkpoints (named by host and time)."""
    return sorted(str(p.relative_to(ws)) for p in (ws / "reward").rglob("*")
                  if p.is_file() and not {"runs", "checkpoints"} & set(p.relative_to(ws).parts))


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    from promedical.app.notebooks import run_notebook
    from promedical.reward.step import step_reward

    root = tmp_path_factory.mktemp("reward")
    by_step, by_notebook = root / "step", root / "notebook"
    metrics = step_reward(by_step, **TINY)
    executed = run_notebook("03", by_notebook, TINY, timeout=900)
    return by_step, by_notebook, metrics, executed


@pytest.mark.model
@pytest.mark.notebook
def test_step_and_notebook_make_the_same_reward_artefacts(workspaces):
    from datasets import load_from_disk

    by_step, by_notebook, metrics, executed = workspaces
    assert artefacts(by_step) == artefacts(by_notebook)
    assert {"reward/candidates.jsonl", "reward/judge_check.json", "reward/judgments.jsonl", "reward/labels.jsonl",
            "reward/dataset/card.json", "reward/adapter/rm_config.json", "reward/train_log.json",
            "reward/evaluation.json", "reward/metrics.json"} <= set(artefacts(by_step))
    phases = sorted(p.name for p in (by_step / "phases").iterdir())
    assert phases == sorted(p.name for p in (by_notebook / "phases").iterdir()) == [
        "reward.candidates.json", "reward.evaluation.json", "reward.judge_check.json", "reward.judgments.json",
        "reward.train.json"]
    candidates = [lines(ws / "reward" / "candidates.jsonl") for ws in (by_step, by_notebook)]
    assert [c["response_id"] for c in candidates[0]] == [c["response_id"] for c in candidates[1]]
    assert len(candidates[0]) == 4  # two instructions at two temperatures
    datasets = [load_from_disk(str(ws / "reward" / "dataset")) for ws in (by_step, by_notebook)]
    for split in ("pairs", "pointwise"):
        assert list(datasets[0][split]) == list(datasets[1][split]), split
    saved = [json.loads((ws / "reward" / "metrics.json").read_text()) for ws in (by_step, by_notebook)]
    assert saved[0] == json.loads(json.dumps(metrics))  # the step returns what it wrote
    assert set(saved[0]) - {"seconds"} == set(saved[1]) == {
        "judge_agreement", "dataset_card", "eval_set", "base", "trained", "trained_vs_base", "reads_criterion", "train",
        "provenance"}
    assert saved[0]["train"]["steps"] == saved[1]["train"]["steps"] == 2
    assert saved[0]["provenance"]["config"]["rm"] == saved[1]["provenance"]["config"]["rm"]
    assert saved[0]["provenance"]["config"]["rm"]["model"] == "tiny-qwen3"  # rm.model null: the step's model
    for key in ("base", "trained"):
        assert set(saved[0][key]) == set(saved[1][key])

    # the notebook shows what each phase made: the tables, the loss plot
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert sum("text/html" in o.get("data", {}) for o in outputs) >= 8
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) == 1


@pytest.mark.model
@pytest.mark.notebook
def test_a_reward_phase_rerun_with_unchanged_inputs_reuses_its_artefact(workspaces, monkeypatch, capsys):
    import promedical.models.sources
    import promedical.reward.scorer
    import promedical.reward.trainer
    from promedical.reward.step import label_candidates, sample_candidates, step_reward
    from promedical.rubrics.selection import training_rubrics

    ws = workspaces[0]
    reward = ws / "reward"
    kept = ["candidates.jsonl", "judge_check.json", "judgments.jsonl", "labels.jsonl", "train_log.json",
            "adapter/adapter_model.safetensors", "evaluation.json"]
    mtimes = {name: (reward / name).stat().st_mtime_ns for name in kept}

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a phase whose inputs and config did not change")

    with monkeypatch.context() as m:  # nothing is sampled, judged, loaded or trained again
        m.setattr(promedical.models.sources, "llm_for", refuse)
        m.setattr(promedical.reward.trainer, "train_reward_model", refuse)
        m.setattr(promedical.reward.scorer.CriteriaRewardModel, "load", refuse)
        capsys.readouterr()
        again = step_reward(ws, **TINY)
    said = capsys.readouterr().out
    for phase in ("candidates", "judge_check", "judgments", "train", "evaluation"):
        assert f"reward.{phase}: inputs and config unchanged since the last run; reusing" in said, phase
    assert {name: (reward / name).stat().st_mtime_ns for name in kept} == mtimes
    assert again["trained"] == workspaces[2]["trained"]

    # an edited candidate: the judge grades again (the candidates phase is still reused)
    config = RewardStepConfig.from_dict(TINY)
    rubrics = training_rubrics(ws, config.n_instructions, config.seed)
    candidates = sample_candidates(ws, config, rubrics)
    candidates[0] = {**candidates[0], "response": "Rest, drink fluids and see a doctor if it gets worse."}
    capsys.readouterr()
    labels = label_candidates(ws, config, rubrics, candidates)
    assert "reward.judgments" not in capsys.readouterr().out
    assert (reward / "judgments.jsonl").stat().st_mtime_ns != mtimes["judgments.jsonl"]
    assert set(labels) == {(c["prompt_id"], c["response_id"]) for c in candidates}
    # a changed config field: the candidates are sampled again
    sample_candidates(ws, replace(config, max_new_tokens=12), rubrics)
    assert "reusing" not in capsys.readouterr().out
    assert (reward / "candidates.jsonl").stat().st_mtime_ns != mtimes["candidates.jsonl"]


def test_the_reward_model_settings_are_a_nested_config():
    # a partial mapping overrides only the keys it names; the rest keep the field's defaults
    c = RewardStepConfig.from_dict({"rm": {"max_steps": 12, "lr": 5e-4}})
    assert (c.rm.max_steps, c.rm.lr, c.rm.batch_size, c.rm.bce_balance) == (12, 5e-4, RMConfig().batch_size, "tier")
    # a dotted key (-p rm.max_steps=3) addresses one field, and wins over the same key of a mapping
    assert RewardStepConfig.from_dict({"rm.max_steps": 3}).rm.max_steps == 3
    assert RewardStepConfig.from_dict({"rm": {"max_steps": 12, "lr": 5e-4}, "rm.max_steps": 3}).rm == replace(
        c.rm, max_steps=3)
    # what a notebook runner hands papermill for -p rm.max_steps=3: the dotted key folded into the mapping
    assert RewardStepConfig.fold_dotted({"rm": {"lr": 5e-4}, "rm.max_steps": 3, "seed": 1}) == {
        "rm": {"lr": 5e-4, "max_steps": 3}, "seed": 1}
    # over a base config, a dotted key changes that field only
    assert RewardStepConfig.from_dict({"rm.batch_size": 1}, base=c).rm == replace(c.rm, batch_size=1)
    # a notebook's globals: rm = {...}
    nb = RewardStepConfig.from_namespace({"rm": {"batch_size": 1}, "labels": "gold", "pd": object()})
    assert (nb.rm.batch_size, nb.labels) == (1, "gold")
    assert RewardStepConfig.from_dict(c.to_dict()) == c and c.to_dict()["rm"]["max_steps"] == 12
    assert RewardStepConfig(rm={"lora_layers": 2}).rm.lora_layers == 2  # the constructor takes a mapping too
    # rm.model / rm.seed null: the step's model and seed; given, their own
    assert RewardStepConfig(model="m", seed=3).reward_model() == replace(RMConfig(), model="m", seed=3)
    assert RewardStepConfig(model="m", rm={"model": "r", "seed": 5}).reward_model() == replace(RMConfig(), model="r",
                                                                                               seed=5)
    # one default per setting: the reward step's rm and rm-train's fields are RMConfig's
    step_rm = RewardStepConfig().rm
    assert {k: v for k, v in step_rm.to_dict().items() if k not in ("model", "seed")} == {
        k: v for k, v in RMTrainStepConfig().project(RMConfig).to_dict().items() if k not in ("model", "seed")}
    assert (step_rm.model, step_rm.seed) == (None, None) and RMTrainStepConfig().model == "embedded"


@pytest.mark.parametrize("params, message", [
    ({"rm": {"max_step": 12}}, r"^parameter 'rm.max_step': unknown for step reward \(known: rm.backend, .*rm.max_steps"),
    ({"rm.max_step": 12}, r"^parameter 'rm.max_step': unknown for step reward \(known: .*rm.max_steps"),
    ({"rm": {"max_steps": 0}}, r"^parameter rm.max_steps: must be >= 1, got 0$"),
    ({"rm.lr": "fast"}, r"^parameter rm.lr: must be a number, got str$"),
    ({"rm": 12}, r"^parameter rm: must be a mapping of RMConfig fields, got int$"),
    ({"rm_steps": 12}, r"^parameter 'rm_steps': unknown for step reward \(known: .*\brm\b"),
])
def test_a_bad_nested_parameter_is_one_line_naming_it(params, message):
    with pytest.raises(ValueError, match=message) as err:
        RewardStepConfig.from_dict(params)
    assert "\n" not in str(err.value)


def test_parameters_docs_list_the_nested_fields():
    from promedical.steps import markdown

    doc = markdown()
    assert "| `rm.max_steps` |" in doc and "| `rm.model` | `null` |" in doc and "rm_steps" not in doc


def test_gold_candidates_dropped_or_relabelled_between_phases_change_the_pairs(tmp_path):
    """labels=gold: the gold candidates are a phase's output like any other; the pairs use what they are given."""
    from promedical.reward.step import build_preference_dataset, gold_candidates
    from promedical.rubrics.selection import training_rubrics

    config = RewardStepConfig.from_dict({**TINY, "labels": "gold", "n_instructions": 2})
    rubrics = training_rubrics(tmp_path, config.n_instructions, config.seed)
    gold = gold_candidates(tmp_path, config, rubrics)
    assert gold and {g["prompt_id"] for g in gold} <= {r.id for r in rubrics}
    full, _ = build_preference_dataset(tmp_path, config, rubrics, [], {}, gold)
    dropped = [g for g in gold if g["response_id"] != gold[0]["response_id"]]
    fewer, _ = build_preference_dataset(tmp_path, config, rubrics, [], {}, dropped)
    assert len(fewer["pointwise"]) < len(full["pointwise"])
    assert gold[0]["response_id"] not in {row["response_id"] for row in fewer["pointwise"]}
    # flip one label of the first gold candidate: its pointwise row says so
    cid, met = next((k, v) for k, v in gold[0]["criteria_met"].items() if v is not None)
    relabelled = [{**gold[0], "criteria_met": {**gold[0]["criteria_met"], cid: not met}}] + gold[1:]
    edited, _ = build_preference_dataset(tmp_path, config, rubrics, [], {}, relabelled)

    def label_of(dataset):
        return [r for r in dataset["pointwise"] if r["response_id"] == gold[0]["response_id"] and r["criterion_id"] == cid]

    assert label_of(edited) != label_of(full)

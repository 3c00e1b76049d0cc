"""Safety-first selection in step 03 (``val_prompts``, ``select_at``): a validation split of the training
prompts, the veto threshold and the checkpoint chosen on it, the chosen weights saved and the evaluation
read at the chosen thresholds."""
import json

import pytest
import torch
from conftest import torch_threads

from promedical.core.config import build
from promedical.core.data import load_split
from promedical.core.files import read_jsonl
from promedical.core.provenance import DATA_DIR
from promedical.reward.config import RewardStepConfig
from promedical.reward.evaluation import evaluate
from promedical.reward.pairs import build_datasets
from promedical.reward.selection import labelled_set, split_validation


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def train_set(n_prompts: int):
    rubrics = load_split("train")
    cands = read_jsonl(DATA_DIR / "train" / "candidates.jsonl")
    keep = list(dict.fromkeys(c["prompt_id"] for c in cands))[:n_prompts]
    return [r for r in rubrics if r.id in keep], [c for c in cands if c["prompt_id"] in keep]


def test_the_validation_set_is_rebuilt_from_the_pointwise_rows_with_the_same_metrics():
    rubrics, cands = train_set(4)
    dd, _ = build_datasets(rubrics, cands)
    back_rubrics, back_cands = labelled_set(dd["pointwise"])
    assert [r.id for r in back_rubrics] == [r.id for r in rubrics]
    assert sorted(c.id for c in back_rubrics[0].criteria) == sorted(c.id for c in rubrics[0].criteria)
    by_key = {(c["prompt_id"], c["response_id"]): c for c in cands}
    for c in back_cands:
        original = by_key[(c["prompt_id"], c["response_id"])]
        assert c["response"] == original["response"]
        assert c["criteria_met"] == {k: bool(v) for k, v in original["criteria_met"].items() if v is not None}
    # any scores: every metric reads the same on the rebuilt set as on the original
    rewards = {(c["prompt_id"], c["response_id"], x.id): (hash((c["response_id"], x.id)) % 97) / 10 - 4.8
               for c in cands for x in next(r for r in rubrics if r.id == c["prompt_id"]).criteria}
    a, b = evaluate(rewards, rubrics, cands, reps=0), evaluate(rewards, back_rubrics, back_cands, reps=0)
    for key in ("pairwise_accuracy", "pairwise_safety_accuracy", "veto_f1", "within_response_same_tier_accuracy",
                "pairwise_disagreeing_accuracy", "ece"):
        assert a[key]["value"] == pytest.approx(b[key]["value"]), key
    # an unknown label is left out of every metric, never read as "not met"
    first = dict(back_cands[0], criteria_met={k: v for k, v in list(back_cands[0]["criteria_met"].items())[1:]})
    partial = evaluate(rewards, back_rubrics, [first, *back_cands[1:]], reps=0)
    assert partial["counts"]["pointwise"] == b["counts"]["pointwise"] - 1


def test_the_split_holds_whole_prompts_out_of_every_part_of_the_dataset():
    rubrics, cands = train_set(6)
    dd, _ = build_datasets(rubrics, cands)
    train, val_rubrics, val_cands = split_validation(dd, 2, seed=3)
    held = {r.id for r in val_rubrics}
    assert len(held) == 2 and {c["prompt_id"] for c in val_cands} == held
    assert not held & set(train["pairs"]["prompt_id"]) and not held & set(train["pointwise"]["prompt_id"])
    assert len(train["pointwise"]) + sum(len(c["criteria_met"]) for c in val_cands) == len(dd["pointwise"])
    assert {r.id for r in split_validation(dd, 2, seed=3)[1]} == held  # seeded
    for bad in (0, 6):
        with pytest.raises(ValueError, match="val_prompts: must be in"):
            split_validation(dd, bad)


def test_the_config_refuses_steps_without_a_validation_split():
    with pytest.raises(ValueError, match="select_at: give val_prompts"):
        build(RewardStepConfig, None, {"select_at": [10]})
    with pytest.raises(ValueError, match="val_prompts: must not be negative"):
        build(RewardStepConfig, None, {"val_prompts": -1})
    with pytest.raises(ValueError, match="select_at: must be a non-empty list"):
        build(RewardStepConfig, None, {"val_prompts": 2, "select_at": [0, 5]})


@pytest.mark.model
def test_the_chosen_steps_weights_are_the_ones_put_back():
    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel
    from promedical.reward.selection import SafetyFirstSelection

    rubrics, cands = train_set(2)
    dd, _ = build_datasets(rubrics, cands)
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lora_layers=1, report_to="none"))
    val_rubrics, val_cands = labelled_set(dd["pointwise"])
    selection = SafetyFirstSelection(rm, val_rubrics, val_cands, steps=[1])
    lora = {n: p for n, p in rm.model.named_parameters() if p.requires_grad}
    selection.on_train_begin(None, None, None)
    at = {0: {n: p.detach().clone() for n, p in lora.items()}}
    with torch.no_grad():  # a "step": every LoRA weight moves
        for p in lora.values():
            p.add_(torch.randn_like(p) * 0.5)
    selection._read(1)
    at[1] = {n: p.detach().clone() for n, p in lora.items()}
    with torch.no_grad():  # training goes on past the last step read
        for p in lora.values():
            p.add_(1.0)
    choice = selection.choose()
    assert set(choice["validation"]) == {"0", "1"} and choice["step"] in (0, 1)
    for n, p in lora.items():
        assert torch.equal(p, at[choice["step"]][n]), n
    assert choice["veto_threshold"] == choice["validation"][str(choice["step"])]["veto_threshold"]["threshold"]


@pytest.mark.model
def test_without_steps_the_selection_reads_every_save_and_the_last_step(tmp_path):
    from transformers import TrainerState, TrainingArguments

    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel
    from promedical.reward.selection import SafetyFirstSelection

    rubrics, cands = train_set(1)
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lora_layers=1, report_to="none"))
    selection = SafetyFirstSelection(rm, *labelled_set(build_datasets(rubrics, cands)[0]["pointwise"]))
    args = TrainingArguments(output_dir=str(tmp_path), save_steps=2, report_to="none", use_cpu=True)
    selection.on_train_begin(args, None, None)
    for step in range(1, 6):
        selection.on_step_end(args, TrainerState(global_step=step, max_steps=5), None)
    assert sorted(selection.points, key=int) == ["0", "2", "4", "5"]


@pytest.mark.model
def test_step_reward_selects_on_the_validation_split_and_evaluates_at_its_thresholds(tmp_path):
    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel
    from promedical.reward.selection import validation_metrics
    from promedical.reward.step import step_reward

    m = step_reward(tmp_path, model="tiny-qwen3", n_instructions=4, max_new_tokens=16, n_judge_check=1,
                    judge_explanation_chars=8, n_eval_prompts=2, n_adjudicate=0, labels="gold", ablation=True,
                    val_prompts=1, select_at=[1, 2],
                    rm={"max_steps": 2, "batch_size": 1, "lora_layers": 1, "report_to": "none"}, progress=False)
    for name, log in (("trained", tmp_path / "reward" / "train_log.json"),
                      ("ablation", tmp_path / "reward" / "ablation" / "train_log.json")):
        sel = json.loads(log.read_text())["stats"]["selection"]
        assert set(sel["validation"]) == {"0", "1", "2"} and sel["validation_prompts"] == 1
        assert m["selection"][name]["step"] == sel["step"]
        assert m[name]["veto_threshold"] == sel["veto_threshold"]
    sel = m["train"]["selection"]
    assert m["base"]["veto_threshold"] == sel["base_veto_threshold"]
    from promedical.reward import tables

    shown = tables.selection(m["train"])  # notebook 03's table: every step read, ◀ at the one kept
    assert list(shown.index) == [0, 1, 2] and list(shown["chosen"]).count("◀") == 1
    assert shown.loc[sel["step"], "chosen"] == "◀" and shown.loc[0, "safety ≥ base"] == "base"
    assert "no selection" in tables.selection({"steps": 2})
    assert m["train"]["prompts"] == 3  # the validation prompt never trained
    # the saved adapter is the chosen step's: it reads on the validation split what that step read
    adapter = tmp_path / "reward" / "adapter"
    rm = CriteriaRewardModel.load(RMConfig(**json.loads((adapter / "rm_config.json").read_text())), adapter=adapter)
    from datasets import load_from_disk

    _, val_rubrics, val_cands = split_validation(load_from_disk(str(tmp_path / "reward" / "dataset")), 1, seed=0)
    again = validation_metrics(rm.score_batch, val_rubrics, val_cands)
    assert again["ece"]["value"] == pytest.approx(sel["validation"][str(sel["step"])]["ece"]["value"], abs=1e-5)

import pytest
import torch

from promedical.data import load_candidates, load_split
from promedical.metrics import cluster_bootstrap, ece, prf
from promedical.reward_model import CriteriaRewardModel, RMConfig
from promedical.rm_eval import evaluate, score_candidates
from conftest import torch_threads

MSGS = [{"role": "user", "content": "I have had a headache since this morning. What should I do?"}]
CRITERIA = ["Advises seeing a doctor if the headache is severe or sudden.", "Mentions paracetamol dosing.",
            "Claims to be a physician."]


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def toy_data():
    good, bad = "Rest, drink water, and see a doctor if it is sudden or severe.", "Just ignore it."
    pairs = [{"messages": MSGS, "criterion": CRITERIA[0], "chosen": good, "rejected": bad}] * 4
    point = [{"messages": MSGS, "criterion": CRITERIA[0], "response": good, "label": True},
             {"messages": MSGS, "criterion": CRITERIA[0], "response": bad, "label": False}] * 2
    return pairs, point


def test_shared_prefix_scoring_equals_one_forward_per_criterion():
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"))
    rm.model.eval()
    response = "Rest and drink water. See a doctor if it is severe."
    fast = rm.score_criteria(MSGS, response, CRITERIA)
    slow = rm.score_criteria_naive(MSGS, response, CRITERIA)
    assert fast == pytest.approx(slow, abs=1e-4)
    assert len(set(round(x, 6) for x in fast)) == 3  # the criterion really changes the score


def test_batched_scoring_of_uneven_responses_equals_one_forward_per_criterion():
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"))
    other = [{"role": "user", "content": "My child has a fever of 39 C."}]
    items = [(MSGS, "Rest.", CRITERIA), (other, "Give fluids, check for a rash, and call the doctor if it lasts.", CRITERIA[:1]),
             (MSGS, "No criteria here.", []), (other, "See a doctor today if the child is drowsy or not drinking.", CRITERIA[1:])]
    batched = rm.score_batch(items, chunk=4)  # padded prefixes of different lengths in one pass
    assert [len(b) for b in batched] == [3, 1, 0, 2]
    one_by_one = rm.score_batch(items)  # the CPU default: one response per pass
    assert [x for b in one_by_one for x in b] == pytest.approx([x for b in batched for x in b], abs=1e-4)
    for (messages, response, criteria), got in zip(items, batched):
        assert got == pytest.approx(rm.score_criteria_naive(messages, response, criteria), abs=1e-4)


def test_training_lowers_the_loss_and_saves_an_adapter(tmp_path):
    pairs, point = toy_data()
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lr=5e-3, batch_size=2, max_steps=12, save_every=6))
    stats = rm.train(pairs, point, tmp_path, progress=False)
    import json
    history = json.loads((tmp_path / "train_log.json").read_text())["history"]
    assert stats["steps"] == 12
    assert sum(h["loss"] for h in history[-3:]) < sum(h["loss"] for h in history[:3])
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    again = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"), adapter=tmp_path / "adapter")
    again.model.eval()
    rm.model.eval()
    assert again.score_criteria(MSGS, "x", CRITERIA) == pytest.approx(rm.score_criteria(MSGS, "x", CRITERIA), abs=1e-4)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    pairs, point = toy_data()
    cfg = dict(model="tiny-qwen3", lr=5e-3, batch_size=2, save_every=2)
    full = CriteriaRewardModel.load(RMConfig(**cfg, max_steps=6))
    full.train(pairs, point, tmp_path / "full", progress=False)
    first = CriteriaRewardModel.load(RMConfig(**cfg, max_steps=4))
    first.train(pairs, point, tmp_path / "cut", progress=False)  # "interrupted" after its checkpoint at step 4
    resumed = CriteriaRewardModel.load(RMConfig(**cfg, max_steps=6))
    stats = resumed.train(pairs, point, tmp_path / "cut", progress=False)
    assert stats["steps"] == 6
    a = {k: v for k, v in full.model.state_dict().items() if "lora" in k}
    b = {k: v for k, v in resumed.model.state_dict().items() if "lora" in k}
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["peft", "unsloth"])
def test_both_backends_train_the_embedded_model(tmp_path, backend):
    pairs, point = toy_data()
    rm = CriteriaRewardModel.load(RMConfig(model="embedded", backend=backend, lora_r=4, batch_size=1, max_steps=2))
    stats = rm.train(pairs, point, tmp_path, progress=False)
    assert stats["steps"] == 2 and stats["final_loss"] == stats["final_loss"]  # finite, not NaN
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_evaluation_arithmetic_on_gold_bench():
    bench, cands = load_split("bench"), load_candidates()
    gold = {(c["prompt_id"], c["response_id"], cid): met for c in cands for cid, met in c["criteria_met"].items()}
    oracle = {k: (5.0 if v else -5.0) for k, v in gold.items()}
    m = evaluate(oracle, bench, cands, reps=50)
    assert m["pointwise_accuracy"]["veto"]["value"] == 1.0
    assert m["pairwise_accuracy"]["value"] == 1.0 and m["pairwise_safety_accuracy"]["value"] == 1.0
    assert m["veto_prf"]["f1"] == 1.0 and m["ece"]["value"] < 0.01
    inverted = {k: -v for k, v in oracle.items()}
    m = evaluate(inverted, bench, cands, reps=50)
    assert m["pairwise_accuracy"]["value"] == 0.0 and m["veto_prf"]["tp"] == 0
    lo, hi = m["ece"]["ci"]
    assert lo <= m["ece"]["value"] <= hi


def test_scoring_helper_batches_responses():
    bench, cands = load_split("bench"), load_candidates()[:5]
    calls = []

    def scorer(items):
        calls.append([len(criteria) for _, _, criteria in items])
        return [[0.0] * len(criteria) for _, _, criteria in items]

    rewards = score_candidates(scorer, bench, cands, batch_size=2, progress=False)
    assert [len(c) for c in calls] == [2, 2, 1] and len(rewards) == sum(map(sum, calls))


def test_metrics():
    assert prf([True, True, False, False], [True, False, True, False]) | {} == {
        "tp": 1, "fp": 1, "fn": 1, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert ece([0.9, 0.9, 0.1, 0.1], [True, False, False, False]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    rows = [{"g": i % 3, "x": float(i)} for i in range(30)]
    out = cluster_bootstrap(rows, lambda r: r["g"], lambda rs: sum(r["x"] for r in rs) / len(rs), reps=200)
    assert out["clusters"] == 3 and out["ci"][0] <= out["value"] <= out["ci"][1]


def test_reward_step_plumbing_end_to_end(tmp_path):
    """Notebook 03's step with the tiny random model everywhere: every artefact is written and consistent."""
    import json

    from promedical.pipeline import step_reward

    m = step_reward(tmp_path, policy_model="tiny-qwen3", judge_model="tiny-qwen3", n_instructions=2,
                    max_new_tokens=24, n_judge_check=1, judge_explanation_chars=20, rm_steps=2, progress=False)
    out = tmp_path / "reward"
    cands = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(cands) == 4 and {c["temperature"] for c in cands} == {0.7, 1.0}
    assert (out / "dataset" / "card.json").exists() and (out / "adapter").exists() or m["train"]["steps"] == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= {"base", "trained", "judge_agreement", "dataset_card", "train", "provenance"}
    assert saved["base"]["counts"]["pointwise"] == m["trained"]["counts"]["pointwise"] > 0
    assert 0.0 <= saved["judge_agreement"]["coverage"] <= 1.0


def test_micro_batches_accumulate_to_the_same_step(tmp_path):
    pairs, point = toy_data()
    whole = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lr=5e-3, batch_size=4, max_steps=2))
    split = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lr=5e-3, batch_size=4, max_steps=2, micro_batch_size=1))
    a = whole.train(pairs, point, tmp_path / "a", progress=False)
    b = split.train(pairs, point, tmp_path / "b", progress=False)
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-4)
    wa = dict(whole.model.named_parameters())
    for name, p in split.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p, wa[name], atol=1e-5), name

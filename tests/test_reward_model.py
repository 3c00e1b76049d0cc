import pytest
import torch
from conftest import torch_threads

from promedical.core.data import load_candidates, load_split
from promedical.core.metrics import cluster_bootstrap, ece, prf
from promedical.core.scoring import is_good
from promedical.reward.config import RMConfig
from promedical.reward.evaluation import evaluate, met_probability, reward_model_scores
from promedical.reward.scorer import CriteriaRewardModel
from promedical.reward.trainer import group_losses, train_reward_model

MSGS = [{"role": "user", "content": "I have had a headache since this morning. What should I do?"}]
CRITERIA = [("proficiency", "Advises seeing a doctor if the headache is severe or sudden."),
            ("bonus", "Mentions paracetamol dosing."), ("veto", "Claims to be a physician.")]
GOOD, BAD = "Rest, drink water, and see a doctor if it is sudden or severe.", "Just ignore it."


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def pair_rows(tier="proficiency", text=CRITERIA[0][1], prompt="q1", messages=MSGS):
    """One criterion-expanded pair and its two pointwise rows, as pairs.build_datasets writes them
    (pointwise label = criterion met: for a veto, violated)."""
    pair = {"prompt_id": prompt, "messages": messages, "tier": tier, "criterion": text, "chosen_id": "good",
            "rejected_id": "bad", "chosen": GOOD, "rejected": BAD, "agrees_with_pair": True}
    point = [{"prompt_id": prompt, "messages": messages, "tier": tier, "criterion": text, "response_id": rid,
              "response": resp, "label": is_good(tier, True) == good} for rid, resp, good in (("good", GOOD, True), ("bad", BAD, False))]
    return [pair], point


def toy_data():
    pairs, point = [], []
    for k in range(4):  # four prompts, so that a batch of 2 prompts makes a step
        msgs = [{"role": "user", "content": MSGS[0]["content"] + " " * k}]
        a, b = pair_rows(prompt=f"q{k}", messages=msgs)
        pairs += a
        point += b
    return pairs, point


@pytest.mark.model
def test_shared_prefix_scoring_equals_one_forward_per_criterion():
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"))
    rm.model.eval()
    response = "Rest and drink water. See a doctor if it is severe."
    fast = rm.score_criteria(MSGS, response, CRITERIA)
    slow = rm.score_criteria_naive(MSGS, response, CRITERIA)
    assert fast == pytest.approx(slow, abs=1e-4)
    assert len(set(round(x, 6) for x in fast)) == 3  # the criterion really changes the score


@pytest.mark.model
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


@pytest.mark.model
def test_two_level_shared_prefix_scores_groups_of_rollouts_as_one_forward_per_criterion():
    """GRPO's case: several rollouts of one prompt, and of two prompts, uneven lengths. The conversation
    runs once per prompt, each rollout's response once on it, every criterion on the response's cache."""
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"))
    other = [{"role": "user", "content": "My child has a fever of 39 C and is drinking less than usual today."}]
    more = [CRITERIA[0], ("veto", "Recommends aspirin to a child."), CRITERIA[1], ("proficiency", "Asks about red flags."),
            CRITERIA[2], ("proficiency", "Explains when to seek urgent care.")]
    items = [(MSGS, "Rest.", more), (other, "Give fluids, check for a rash, and call the doctor if it lasts.", CRITERIA[:2]),
             (MSGS, "Rest, drink water, and see a doctor if it is sudden or severe, or if you feel confused.", CRITERIA),
             (other, "Fluids.", CRITERIA[:2]), (MSGS, "No criteria read here.", []), (MSGS, "\n\n Ice pack", CRITERIA[::-1])]
    naive = [rm.score_criteria_naive(*it) for it in items]
    embedded = []  # tokens of every forward of the chunk=1 call
    hook = rm.model.get_input_embeddings().register_forward_hook(lambda m, args, out: embedded.append(args[0].numel()))
    try:
        by_chunk = {1: rm.score_batch(items, chunk=1)}
    finally:
        hook.remove()
    by_chunk.update({chunk: rm.score_batch(items, chunk=chunk) for chunk in (2, 16)})
    for got in by_chunk.values():
        assert [len(g) for g in got] == [6, 2, 3, 2, 0, 3]
        assert [x for g in got for x in g] == pytest.approx([x for n in naive for x in n], abs=1e-4)
    # chunk=1 (the CPU default): each conversation's shared tokens once, then per response ONE packed row
    # of its own tokens and all its criterion suffixes (packed_attention on the cache: no padding)
    encoded = [rm.encode(*it) for it in items]
    tokens = 0
    for group in ([0, 2, 5], [1, 3]):
        prefixes = [encoded[i][0] for i in group]
        shared = next(k for k in range(min(map(len, prefixes)) + 1)
                      if k == min(map(len, prefixes)) or len({p[k] for p in prefixes}) > 1)
        assert shared > 40  # the system prompt and the conversation
        tokens += shared + sum(len(p) - shared for p in prefixes)
        tokens += sum(len(x) for i in group for x in encoded[i][1])
    assert sum(embedded) == tokens
    assert tokens < sum(len(p) + sum(map(len, s)) for p, s, _ in encoded)


@pytest.mark.model
def test_a_frozen_reward_model_scores_as_the_adapter_does_without_lora_layers():
    """freeze() (GRPO, the benchmark): the LoRA update merged into the base weights gives the same scores."""
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"))
    with torch.no_grad():  # a trained adapter: non-zero B, so the merge has something to merge
        for name, p in rm.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    items = [(MSGS, GOOD, CRITERIA), (MSGS, BAD, CRITERIA)]
    before = rm.score_batch(items)
    base = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3")).score_batch(items)
    assert max(abs(a - b) for x, y in zip(before, base) for a, b in zip(x, y)) > 1e-3  # the adapter matters
    rm.freeze()
    assert not any("lora" in name for name, _ in rm.model.named_parameters())
    assert not any(p.requires_grad for p in rm.model.parameters())
    after = rm.score_batch(items)
    assert [x for a in after for x in a] == pytest.approx([x for b in before for x in b], abs=1e-4)


@pytest.mark.model
def test_training_lowers_the_loss_and_saves_an_adapter(tmp_path):
    pairs, point = toy_data()
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lr=5e-3, batch_size=2, max_steps=12, save_every=6,
                                           report_to="tensorboard"))
    stats = train_reward_model(rm, pairs, point, tmp_path, progress=False)
    import json
    history = json.loads((tmp_path / "train_log.json").read_text())["history"]
    assert stats["steps"] == 12 and [h["step"] for h in history] == list(range(1, 13))
    from promedical.core.tracking import scalars

    logged = scalars(tmp_path / "runs")
    assert [s for s, _ in logged["train/rm/loss"]] == list(range(1, 13))
    assert [v for _, v in logged["train/rm/loss"]] == pytest.approx([h["loss"] for h in history], rel=1e-5)
    assert sum(h["loss"] for h in history[-3:]) < sum(h["loss"] for h in history[:3])
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    again = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"), adapter=tmp_path / "adapter")
    again.model.eval()
    rm.model.eval()
    assert again.score_criteria(MSGS, "x", CRITERIA) == pytest.approx(rm.score_criteria(MSGS, "x", CRITERIA), abs=1e-4)


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, "tests")
from transformers import TrainerCallback
from test_reward_model import toy_data
from promedical.reward.scorer import CriteriaRewardModel
from promedical.reward.config import RMConfig
from promedical.reward.trainer import train_reward_model

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 4:
            os.kill(os.getpid(), signal.SIGKILL)  # a real, unannounced kill right after the step-4 checkpoint

pairs, point = toy_data()
rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lr=5e-3, batch_size=2, save_every=2, max_steps=6,
                                       lr_scheduler="linear", warmup_ratio=0.2))
train_reward_model(rm, pairs, point, sys.argv[1], progress=False, callbacks=[KillAfterSave()])
"""


@pytest.mark.subprocess
@pytest.mark.model
def test_killed_training_resumes_to_the_uninterrupted_weights(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys

    from conftest import ROOT

    cfg = dict(model="tiny-qwen3", lr=5e-3, batch_size=2, save_every=2, max_steps=6, lr_scheduler="linear",
               warmup_ratio=0.2)  # a schedule too: the resumed run must continue it, not restart it
    pairs, point = toy_data()
    full = CriteriaRewardModel.load(RMConfig(**cfg))
    train_reward_model(full, pairs, point, tmp_path / "full", progress=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path / "cut")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert not (tmp_path / "cut" / "adapter").exists()  # it died mid-run
    resumed = CriteriaRewardModel.load(RMConfig(**cfg))
    stats = train_reward_model(resumed, pairs, point, tmp_path / "cut", progress=False)
    assert stats["steps"] == 6
    a = {k: v for k, v in full.model.state_dict().items() if "lora" in k}
    b = {k: v for k, v in resumed.model.state_dict().items() if "lora" in k}
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    la = json.loads((tmp_path / "full" / "train_log.json").read_text())["history"]
    lb = json.loads((tmp_path / "cut" / "train_log.json").read_text())["history"]
    assert [h["step"] for h in lb] == list(range(1, 7))  # steps 1-4 from the killed run's checkpoint, 5-6 resumed
    assert [h["loss"] for h in la] == pytest.approx([h["loss"] for h in lb], abs=1e-5)


@pytest.mark.parametrize("backend", ["peft", "unsloth"])
@pytest.mark.model
def test_both_backends_train_the_embedded_model(tmp_path, backend):
    pairs, point = toy_data()
    rm = CriteriaRewardModel.load(RMConfig(model="embedded", backend=backend, lora_r=4, batch_size=1, max_steps=2))
    stats = train_reward_model(rm, pairs, point, tmp_path, progress=False)
    assert stats["steps"] == 2 and stats["final_loss"] == stats["final_loss"]  # finite, not NaN
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def oracle_rewards(rubrics, cands):
    """+5 on the good side of every gold grade, -5 on the other (for a veto: violated = -5)."""
    tiers = {(r.id, c.id): c.tier for r in rubrics for c in r.criteria}
    return {(c["prompt_id"], c["response_id"], cid): (5.0 if is_good(tiers[(c["prompt_id"], cid)], met) else -5.0)
            for c in cands for cid, met in c["criteria_met"].items()}


def test_evaluation_arithmetic_on_gold_bench():
    bench, cands = load_split("bench"), load_candidates()
    oracle = oracle_rewards(bench, cands)
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

    rewards = reward_model_scores(scorer, bench, cands, batch_size=2, progress=False)
    assert [len(c) for c in calls] == [2, 2, 1] and len(rewards) == sum(map(sum, calls))


def test_metrics():
    assert prf([True, True, False, False], [True, False, True, False]) | {} == {
        "tp": 1, "fp": 1, "fn": 1, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert ece([0.9, 0.9, 0.1, 0.1], [True, False, False, False]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    rows = [{"g": i % 3, "x": float(i)} for i in range(30)]
    out = cluster_bootstrap(rows, lambda r: r["g"], lambda rs: sum(r["x"] for r in rs) / len(rs), reps=200)
    assert out["clusters"] == 3 and out["ci"][0] <= out["value"] <= out["ci"][1]


@pytest.mark.model
def test_reward_step_plumbing_end_to_end(tmp_path):
    """Notebook 03's step with the tiny random model everywhere: every artefact is written and consistent."""
    import json

    from promedical.reward.step import step_reward

    m = step_reward(tmp_path, model="tiny-qwen3", judge_model="tiny-qwen3", n_instructions=2,
                    max_new_tokens=24, n_judge_check=1, judge_explanation_chars=20, rm={"max_steps": 2}, progress=False)
    out = tmp_path / "reward"
    cands = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(cands) == 4 and {c["temperature"] for c in cands} == {0.7, 1.0}
    assert (out / "dataset" / "card.json").exists() and (out / "adapter").exists() or m["train"]["steps"] == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= {"base", "trained", "judge_agreement", "dataset_card", "train", "provenance"}
    assert saved["base"]["counts"]["pointwise"] == m["trained"]["counts"]["pointwise"] > 0
    assert 0.0 <= saved["judge_agreement"]["coverage"] <= 1.0


@pytest.mark.model
def test_micro_batches_accumulate_to_the_same_step(tmp_path):
    pairs, point = toy_data()
    whole = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lr=5e-3, batch_size=4, max_steps=2))
    split = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lr=5e-3, batch_size=4, max_steps=2, micro_batch_size=1))
    a = train_reward_model(whole, pairs, point, tmp_path / "a", progress=False)
    b = train_reward_model(split, pairs, point, tmp_path / "b", progress=False)
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-4)
    wa = dict(whole.model.named_parameters())
    for name, p in split.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p, wa[name], atol=1e-5), name


# ---------------------------------------------------------------------------------------------
# Direction: one definition, checked through the loss, the evaluation and the probability
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("question", ["good", "met"])
@pytest.mark.parametrize("tier", ["proficiency", "bonus", "veto"])
@pytest.mark.model
def test_a_few_steps_move_the_reward_the_right_way(tmp_path, tier, question):
    """For every tier and both question polarities: a few steps on one pair make the evaluation count it
    correct, and a few steps on one pointwise row move P(met) toward its gold label."""
    from promedical.reward.evaluation import _pair_rows

    text = dict(CRITERIA)[tier]
    pairs, point = pair_rows(tier, text)

    def trained(p, q, name):
        rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", question=question, lr=2e-2, batch_size=1,
                                               max_steps=8, contrast_weight=0.0))
        before = [rm.score_criteria(MSGS, resp, [(tier, text)])[0] for resp in (GOOD, BAD)]
        train_reward_model(rm, p, q, tmp_path / name, progress=False)
        return before, [rm.score_criteria(MSGS, resp, [(tier, text)])[0] for resp in (GOOD, BAD)]

    before, after = trained(pairs, [], "pair")
    assert after[0] - after[1] > before[0] - before[1]
    row = dict(pairs[0], prompt_id="q1", criterion_id="c")
    assert _pair_rows({("q1", "good", "c"): after[0], ("q1", "bad", "c"): after[1]}, [row])[0]["correct"]
    met_good, met_bad = (met_probability(tier, r) for r in after)
    assert met_good < met_bad if tier == "veto" else met_good > met_bad  # a safe response reads as less likely to violate
    for k, row in enumerate(point):
        before, after = trained([], [row], f"point{k}")
        p0, p1 = met_probability(tier, before[k]), met_probability(tier, after[k])
        assert (p1 > p0) == row["label"], (row["response_id"], p0, p1)


@pytest.mark.parametrize("tier", ["proficiency", "bonus", "veto"])
@pytest.mark.model
def test_pairwise_and_pointwise_gradients_agree_in_sign(tier):
    from promedical.reward.training_data import training_groups

    text = dict(CRITERIA)[tier]
    pairs, point = pair_rows(tier, text)
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"))
    params = [p for p in rm.model.parameters() if p.requires_grad]
    grads = {}
    for name, (p, q) in {"bt": (pairs, []), "bce": ([], point)}.items():
        rm.model.zero_grad()
        group_losses(rm, training_groups(p, q))[name].backward()
        grads[name] = torch.cat([x.grad.flatten() for x in params if x.grad is not None])
    # both push r(good side) up and r(other side) down: the two gradients point the same way
    assert torch.nn.functional.cosine_similarity(grads["bt"], grads["bce"], dim=0) > 0.5


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.model
def test_packed_criteria_equal_one_sequence_per_criterion_in_value_and_gradient(attention):
    """On SDPA, packing runs ``packed_attention`` (the prefix causally, each suffix against the prefix
    and itself); on another attention, an additive 4-D mask. Both equal the unpacked computation."""
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"))
    configs = [m.config for m in rm.model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")]
    for c in configs:
        c._attn_implementation = attention
    other = [{"role": "user", "content": "My child has a fever of 39 C and is drinking less than usual."}]
    items = [(MSGS, "Rest.", CRITERIA), (other, "Give fluids, check for a rash, and call the doctor if it lasts.", CRITERIA[1:]),
             (MSGS, "See a GP today.", CRITERIA[:1])]
    encoded = [rm.encode(*it) for it in items]
    params = [p for p in rm.model.parameters() if p.requires_grad]
    packed = rm.packed_rewards(encoded)
    flat = torch.cat(packed)
    (flat * torch.arange(1, len(flat) + 1)).sum().backward()  # a weighted sum: every reward's gradient counts
    g_packed = [p.grad.clone() for p in params]
    rm.model.zero_grad()
    seqs = [(pre, s) for pre, ss, _ in encoded for s in ss]
    tiers = [t for _, _, ts in encoded for t in ts]
    naive = rm.reward_full(seqs, tiers)
    (naive * torch.arange(1, len(naive) + 1)).sum().backward()
    assert flat.detach().tolist() == pytest.approx(naive.detach().tolist(), abs=1e-4)
    for a, b in zip(g_packed, (p.grad for p in params)):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)
    with torch.no_grad():  # and the inference scorer (shared-prefix KV cache) agrees with both
        scored = [x for it in items for x in rm.score_criteria(*it)]
    assert scored == pytest.approx(naive.detach().tolist(), abs=1e-4)
    assert {c._attn_implementation for c in configs} == {"promedical_packed_sdpa" if attention == "sdpa" else "eager"}


@pytest.mark.model
def test_long_inputs_lose_the_middle_of_the_prefix_never_the_criterion():
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", max_length=96))
    long = "word " * 400 + "THE END"
    prefix, suffixes, _ = rm.encode(MSGS, long, CRITERIA)
    assert len(prefix) + sum(map(len, suffixes)) == 96
    full_suffix = rm._ids("\n\nSafety violation: Claims to be a physician.\nIs the response free of this violation? Answer:")
    assert suffixes[2] == full_suffix
    assert rm.tokenizer.decode(prefix).rstrip().endswith("THE END")  # the response's end survives
    with pytest.raises(ValueError, match="max_length"):
        CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", max_length=40)).encode(MSGS, long, CRITERIA * 3)


def test_training_groups_turn_veto_labels_into_the_good_side():
    from promedical.reward.training_data import training_groups

    pairs, point = pair_rows("veto", "Claims to be a physician.")
    (group,) = training_groups(pairs, point, disagree_weight=3.0)
    by_text = {r.response: r for r in group.responses}
    assert by_text[GOOD].good == [True] and by_text[BAD].good == [False]  # not violating = good side
    (a, ca, b, cb, w), = group.pairs
    assert group.responses[a].response == GOOD and w == 1.0
    pairs[0]["agrees_with_pair"] = False
    assert training_groups(pairs, point, disagree_weight=3.0)[0].pairs[0][-1] == 3.0
    contradicting = [dict(point[0], label=not point[0]["label"])]
    with pytest.raises(ValueError, match="contradictory"):
        training_groups([], point + contradicting)


def test_within_response_contrasts_need_the_criterion():
    """A reward that ignores the criterion (one score per response) sits at 0.5 within responses and
    loses nothing when the criterion is swapped; the oracle reads it."""
    from promedical.reward.evaluation import shuffled_criteria

    bench, cands = load_split("bench"), load_candidates()
    gold = oracle_rewards(bench, cands)
    length = {(c["prompt_id"], c["response_id"]): float(len(c["response"])) for c in cands}
    scalar = {k: length[k[:2]] for k in gold}
    swap = shuffled_criteria(bench, seed=0)
    assert all(swap[(r.id, c.id)].tier == c.tier and swap[(r.id, c.id)] not in r.criteria for r in bench for c in r.criteria)
    m = evaluate(scalar, bench, cands, reps=50, shuffled=scalar)
    assert m["within_response_accuracy"]["value"] == 0.5 == m["within_response_same_tier_accuracy"]["value"]
    assert m["criterion_sensitivity"]["all"]["gap"]["value"] == 0.0 and not m["criterion_sensitivity"]["reads_criterion"]
    # the oracle read with another rubric's criterion has nothing to go on
    m = evaluate(gold, bench, cands, reps=50, shuffled={k: 0.0 for k in gold})
    assert m["within_response_accuracy"]["value"] == 1.0 == m["within_response_same_tier_accuracy"]["value"]
    assert m["criterion_sensitivity"]["all"]["gap"]["value"] == 1.0 and m["criterion_sensitivity"]["reads_criterion"]


@pytest.mark.model
def test_reward_step_trains_on_gold_labels_and_checks_the_criterion(tmp_path):
    """labels="gold": no sampling, the gold train candidates of the chosen instructions become the
    dataset; the metrics carry the paired difference and the criterion-sensitivity check."""
    import json

    from promedical.reward.step import step_reward

    m = step_reward(tmp_path, model="tiny-qwen3", judge_model="tiny-qwen3", labels="gold", n_instructions=2,
                    n_judge_check=1, judge_explanation_chars=20, n_eval_prompts=2, n_adjudicate=0,
                    rm={"max_steps": 2, "batch_size": 1, "lora_layers": 1}, progress=False)
    assert not (tmp_path / "reward" / "candidates.jsonl").exists()  # nothing sampled from the policy
    card = json.loads((tmp_path / "reward" / "dataset" / "card.json").read_text())
    assert card["sources"]["gold_labels"].endswith("candidates.jsonl") and card["prompts"] == 2 and card["pairs"] > 0
    assert m["train"]["steps"] == 2 and m["train"]["prompts"] == 2
    for name in ("base", "trained"):
        sens = m[name]["criterion_sensitivity"]
        assert set(sens) >= {"all", "proficiency", "bonus", "veto", "reads_criterion"}
        assert 0 <= sens["all"]["own"]["value"] <= 1
    assert m["base"]["criterion_sensitivity"]["all"]["own"]["value"] == m["base"]["pairwise_accuracy"]["value"]
    assert set(m["trained_vs_base"]) == {"pairwise_accuracy", "pairwise_safety_accuracy", "within_response_accuracy",
                                         "within_response_same_tier_accuracy", "pairwise_disagreeing_accuracy",
                                         "veto_f1", "ece"}
    with pytest.raises(ValueError, match="parameter labels: must be one of"):
        step_reward(tmp_path, labels="physicians")


# ---------------------------------------------------------------------------------------------
# Class balance of the pointwise BCE (bce_balance="tier")
# ---------------------------------------------------------------------------------------------
VETO = ("veto", "Claims to be a physician.")
VIOLATING = "As a physician myself, I can tell you it is nothing: take two aspirin."
FREE = ["Rest, drink water, and see a doctor if it is sudden or severe.", "Drink water and rest today.",
        "See a GP if it lasts more than a few days.", "A cool cloth and a quiet room often help.",
        "Sleep well and avoid screens for a while."]


def imbalanced_rows():
    """One prompt, six responses on one veto: one violates it, five are free of it (the minority class
    is the violation, as in the gold data); plus one proficiency label per response, 4 good to 2 bad."""
    rows = []
    for k, resp in enumerate([VIOLATING] + FREE):
        base = {"prompt_id": "q1", "messages": MSGS, "response_id": f"r{k}", "response": resp}
        rows.append(dict(base, tier="veto", criterion=VETO[1], label=k == 0))  # label = met: violated
        rows.append(dict(base, tier="proficiency", criterion=CRITERIA[0][1], label=k % 3 != 0))
    return rows


def test_balanced_label_weights_give_both_sides_of_a_tier_the_same_weight():
    from promedical.reward.trainer import step_counts
    from promedical.reward.training_data import label_weights, training_groups

    rows = imbalanced_rows()
    (plain,) = training_groups([], rows)
    assert label_weights([plain], "none") == {k: 1.0 for k in label_weights([plain], "none")}
    assert plain.label_weight == plain.n_labels == 12
    (group,) = training_groups([], rows, balance="tier")
    w = label_weights([group])
    # veto: 1 violating (bad side), 5 free: n / (2 n_side)
    assert w[("veto", False)] == pytest.approx(6 / 2) and w[("veto", True)] == pytest.approx(6 / 10)
    assert w[("proficiency", True)] == pytest.approx(6 / 8) and w[("proficiency", False)] == pytest.approx(6 / 4)
    for tier in ("veto", "proficiency"):  # both sides carry half of the tier; the tier keeps its total
        sides = [sum(r.label_weight(i) for r in group.responses for i, ((t, _), g) in enumerate(zip(r.criteria, r.good))
                     if t == tier and g == side) for side in (True, False)]
        assert sides[0] == pytest.approx(sides[1]) and sum(sides) == pytest.approx(6)
    assert step_counts([group])["bce"] == pytest.approx(12)
    one_sided = [r for r in rows if r["tier"] == "veto" and not r["label"]]  # nothing to balance: weight 1
    assert set(label_weights(training_groups([], one_sided)).values()) == {1.0}
    with pytest.raises(ValueError, match="bce_balance"):
        RMConfig(model="tiny-qwen3", bce_balance="balanced-ish")


def test_veto_weight_multiplies_the_veto_tiers_labels_and_pairs_only():
    from promedical.reward.training_data import training_groups

    rows = imbalanced_rows()
    pairs = [{"prompt_id": "q1", "messages": MSGS, "chosen_id": "r1", "rejected_id": "r0", "chosen": FREE[0],
              "rejected": VIOLATING, "tier": "veto", "criterion": VETO[1], "agrees_with_pair": True},
             {"prompt_id": "q1", "messages": MSGS, "chosen_id": "r1", "rejected_id": "r0", "chosen": FREE[0],
              "rejected": VIOLATING, "tier": "proficiency", "criterion": CRITERIA[0][1], "agrees_with_pair": False}]
    rows = [r for r in rows if not (r["tier"] == "proficiency" and r["response_id"] in ("r0", "r1"))]
    (plain,) = training_groups(pairs, rows, disagree_weight=2.0, balance="tier")
    (heavy,) = training_groups(pairs, rows, disagree_weight=2.0, balance="tier", veto_weight=3.0)
    for a, b in zip(plain.responses, heavy.responses):
        for i, (tier, _) in enumerate(a.criteria):
            assert b.label_weight(i) == pytest.approx(a.label_weight(i) * (3.0 if tier == "veto" else 1.0))
    assert [p[-1] for p in plain.pairs] == [1.0, 2.0] and [p[-1] for p in heavy.pairs] == [3.0, 2.0]
    with pytest.raises(ValueError, match="veto_weight: must not be negative"):
        RMConfig(model="tiny-qwen3", veto_weight=-1.0)


@pytest.mark.model
def test_balanced_bce_is_the_weighted_sum_of_the_label_losses():
    from promedical.reward.training_data import training_groups

    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"))
    (group,) = training_groups([], imbalanced_rows(), balance="tier")
    with torch.no_grad():
        got = group_losses(rm, [group])["bce"].item()
        rewards = rm.packed_rewards([rm.encode(r.messages, r.response, r.criteria) for r in group.responses])
    want = sum(r.label_weight(i) * torch.nn.functional.binary_cross_entropy_with_logits(rr[i], torch.tensor(float(g))).item()
               for r, rr in zip(group.responses, rewards) for i, g in enumerate(r.good))
    assert got == pytest.approx(want, rel=1e-5)
    (plain,) = training_groups([], imbalanced_rows())
    with torch.no_grad():
        assert group_losses(rm, [plain])["bce"].item() != pytest.approx(got, rel=1e-3)  # the weights change the loss


@pytest.mark.model
def test_balanced_bce_raises_the_rare_violation_where_the_plain_bce_drowns_it(tmp_path):
    """Real steps on imbalanced veto labels (1 violation in 6): the plain BCE pulls every response to
    the base rate (P(violated) ~ 1/6: nothing flagged, the demo's failure); the balanced BCE's optimum
    sits at 0.5 on average and the violating response is flagged, above every free response."""
    rows = [r for r in imbalanced_rows() if r["tier"] == "veto"]
    after = {}
    for balance in ("none", "tier"):
        rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", lr=2e-2, batch_size=1, max_steps=16, bt_weight=0.0,
                                               contrast_weight=0.0, bce_balance=balance))
        before = met_probability("veto", rm.score_criteria(MSGS, VIOLATING, [VETO])[0])
        assert 0.4 < before < 0.6  # the untrained model has no opinion
        train_reward_model(rm, [], rows, tmp_path / balance, progress=False)
        after[balance] = [met_probability("veto", rm.score_criteria(MSGS, resp, [VETO])[0]) for resp in [VIOLATING] + FREE]
    plain, balanced = after["none"], after["tier"]
    assert max(plain) < 0.3, plain  # drowned: every response read as free of the violation
    assert balanced[0] > 0.5 and balanced[0] > max(balanced[1:]), balanced  # the violation is flagged
    assert sum(balanced) / 6 > sum(plain) / 6 + 0.2


def test_learning_curve_figure_shows_each_point_with_its_ci():
    """plots.rm_curve_figure on real evaluations: a scalar reward (flags every veto: F1 defined) at
    step 0, the oracle at step 10 with its paired difference; an F1 left undefined is left out."""
    from promedical.reward.evaluation import compare
    from promedical.reward.plots import rm_curve_figure

    bench, cands = load_split("bench"), load_candidates(4)
    bench = [r for r in bench if r.id in {c["prompt_id"] for c in cands}]
    oracle = oracle_rewards(bench, cands)
    flat = {k: -1.0 for k in oracle}  # every criterion on the bad side: every veto flagged
    never = {k: 1.0 for k in oracle}  # nothing flagged: F1 undefined
    shuffled = {k: 0.0 for k in oracle}
    points = {"0": evaluate(flat, bench, cands, reps=50, shuffled=shuffled),
              "10": dict(evaluate(oracle, bench, cands, reps=50, shuffled=shuffled),
                         vs_base=compare(flat, oracle, bench, cands, reps=50)),
              "20": evaluate(never, bench, cands, reps=50, shuffled=shuffled)}
    assert points["20"]["veto_f1"]["value"] is None
    fig = rm_curve_figure(points)
    traces = {(t.name, t.xaxis): t for t in fig.data}
    assert len(fig.data) == 7 and len(fig.layout.annotations) == 4  # 4 panels; the gap has no trained - base
    value, diff = traces[("held-out value", "x")], traces[("trained - base (paired CI)", "x")]
    assert list(value.x) == [0, 10, 20] and list(diff.x) == [10]
    assert value.y[1] == 1.0 and diff.y[0] == pytest.approx(1.0 - points["0"]["pairwise_accuracy"]["value"])
    lo, hi = points["0"]["pairwise_accuracy"]["ci"]
    assert value.error_y.array[0] == pytest.approx(hi - value.y[0]) and value.error_y.arrayminus[0] == pytest.approx(value.y[0] - lo)
    assert list(traces[("held-out value", "x2")].x) == [0, 10]  # veto F1: the undefined point is left out
    assert traces[("held-out value", "x4")].y[1] == pytest.approx(points["10"]["criterion_sensitivity"]["all"]["gap"]["value"])

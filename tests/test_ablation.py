"""The paper's ablation without explicit criteria (``RMConfig.criteria="none"``), the verdict "reads the
criterion" decided by tests a scalar score fails, and a base evaluation that does not depend on the seed."""
import random

import pytest
import torch
from conftest import torch_threads

from promedical.core.data import load_candidates, load_split
from promedical.core.scoring import is_good
from promedical.reward.config import RMConfig
from promedical.reward.evaluation import compare, criterion_verdict, evaluate
from promedical.reward.pairs import build_datasets
from promedical.reward.training_data import overall_groups, training_groups

MSGS = [{"role": "user", "content": "I have had a headache since this morning. What should I do?"}]
RESPONSE = "Rest, drink water, and see a doctor if it is sudden or severe."
CRITERIA = [("proficiency", "Advises seeing a doctor if the headache is severe or sudden."),
            ("bonus", "Mentions paracetamol dosing with a maximum daily amount."),
            ("veto", "Claims to be a physician.")]


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def contains(haystack: list[int], needle: list[int]) -> bool:
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def flat(encoded) -> list[int]:
    prefix, suffixes, _ = encoded
    return prefix + [t for s in suffixes for t in s]


def gold_set(n_prompts: int):
    bench, cands = load_split("bench"), load_candidates()
    keep = list(dict.fromkeys(c["prompt_id"] for c in cands))[:n_prompts]
    cands = [c for c in cands if c["prompt_id"] in keep]
    return [r for r in bench if r.id in keep], cands


# ---------------------------------------------------------------- the ablation's input and scores
@pytest.mark.model
def test_the_ablation_reads_no_criterion_and_gives_every_criterion_its_one_score():
    from promedical.reward.scorer import CriteriaRewardModel

    explicit = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"))
    ablation = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", criteria="none"))
    for tier, text in CRITERIA:
        needle = explicit.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        assert contains(flat(explicit.encode(MSGS, RESPONSE, [(tier, text)])), needle)  # the check can fail
        assert not contains(flat(ablation.encode(MSGS, RESPONSE, [(tier, text)])), needle)
    one, other = (ablation.encode(MSGS, RESPONSE, [c]) for c in CRITERIA[:2])
    assert one == other  # two different criteria, the same ids
    assert ablation.encode(MSGS, RESPONSE, [])[1] == []
    scores = ablation.score_batch([(MSGS, RESPONSE, CRITERIA), (MSGS, "Just ignore it.", CRITERIA[:1])])
    assert len(scores[0]) == 3 and len(set(scores[0])) == 1 and len(scores[1]) == 1
    assert scores[0][0] == pytest.approx(ablation.score_criteria(MSGS, RESPONSE, CRITERIA[1:2])[0], abs=1e-5)
    assert ablation.score_criteria_naive(MSGS, RESPONSE, CRITERIA) == pytest.approx(scores[0], abs=1e-4)


def test_the_ablation_trains_on_overall_pairs_and_overall_labels():
    """Each lexicographic pair once, its winner first (the overall order, whatever the criterion's), and each
    response's overall label: the label-weighted share of its criteria on the good side."""
    import json

    rubrics, cands = gold_set(2)
    dd, _ = build_datasets(rubrics, cands)
    groups = training_groups(list(dd["pairs"]), list(dd["pointwise"]), balance="tier")
    for g, a in zip(groups, overall_groups(groups)):
        conversation = json.dumps(g.responses[0].messages, sort_keys=True)
        rows = [row for row in dd["pairs"] if json.dumps(row["messages"], sort_keys=True) == conversation]
        overall = {(row["chosen"], row["rejected"]) if row["agrees_with_pair"] else (row["rejected"], row["chosen"])
                   for row in rows}
        assert {(a.responses[w].response, a.responses[lo].response) for w, _, lo, _, _ in a.pairs} == overall
        assert a.contrasts == [] and all(w == 1.0 and ca == cb == 0 for _, ca, _, cb, w in a.pairs)
        for resp, orig in zip(a.responses, g.responses):
            known = [(orig.label_weight(i), good) for i, good in enumerate(orig.good) if good is not None]
            assert resp.criteria == [("proficiency", "")]
            assert resp.good[0] == pytest.approx(sum(w for w, good in known if good) / sum(w for w, _ in known))
            assert resp.label_weight(0) == pytest.approx(sum(w for w, _ in known))


@pytest.mark.model
def test_the_ablation_trains_a_few_steps(tmp_path):
    import json

    from promedical.reward.scorer import CriteriaRewardModel
    from promedical.reward.trainer import train_reward_model

    rubrics, cands = gold_set(2)
    dd, _ = build_datasets(rubrics, cands)
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", criteria="none", lr=5e-3, batch_size=1, max_steps=3,
                                           lora_layers=1, max_length=512, report_to="none"))
    stats = train_reward_model(rm, list(dd["pairs"]), list(dd["pointwise"]), tmp_path, progress=False, resume=False)
    history = json.loads((tmp_path / "train_log.json").read_text())["history"]
    assert stats["steps"] == 3 and len(history) == 3
    assert all(h["contrast"] == 0.0 and h["bt"] > 0 and h["bce"] > 0 for h in history)
    again = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", criteria="none", max_length=512),
                                     adapter=tmp_path / "adapter")
    assert again.config.criteria == "none"
    assert json.loads((tmp_path / "adapter" / "rm_config.json").read_text())["criteria"] == "none"


def test_criteria_names_one_of_two_inputs():
    from promedical.reward.config import RewardStepConfig

    with pytest.raises(ValueError, match="criteria"):
        RMConfig(criteria="no")
    with pytest.raises(ValueError, match="ablation"):
        RewardStepConfig(ablation=True, rm={"criteria": "none"})


# ---------------------------------------------------------------- "reads the criterion", decided by tests that can fail
def oracle(rubrics, cands, tiers_of=None):
    """+5 on the good side of each gold grade, -5 on the other; ``tiers_of``: {(prompt, criterion): the
    criterion whose grade is read instead} (a model whose criteria were shuffled)."""
    tier = {(r.id, c.id): c.tier for r in rubrics for c in r.criteria}
    read = tiers_of or {}
    out = {}
    for c in cands:
        for cid in c["criteria_met"]:
            src = read.get((c["prompt_id"], cid), cid)
            out[(c["prompt_id"], c["response_id"], cid)] = 5.0 if is_good(tier[(c["prompt_id"], src)],
                                                                         c["criteria_met"][src]) else -5.0
    return out


def scalar(rubrics, cands, seed: int):
    """One score per response, the same for all its criteria (a quality score with noise: the ablation's kind)."""
    from promedical.core.scoring import grpo_reward, tier_scores

    by_id, rng = {r.id: r for r in rubrics}, random.Random(seed)
    out = {}
    for c in cands:
        s = grpo_reward(tier_scores(by_id[c["prompt_id"]], c["criteria_met"])) + rng.gauss(0, 0.3)
        out.update({(c["prompt_id"], c["response_id"], cid): s for cid in c["criteria_met"]})
    return out


def shuffled_within_tiers(rubrics, seed: int = 0):
    """Each criterion read as another criterion of its tier in the same rubric (a cycle: never itself)."""
    rng, out = random.Random(seed), {}
    for r in rubrics:
        for t in ("proficiency", "bonus", "veto"):
            ids = [c.id for c in r.tier(t)]
            rng.shuffle(ids)
            out.update({(r.id, a): b for a, b in zip(ids, ids[1:] + ids[:1])})
    return out


def verdict(base, trained, ablation, rubrics, cands):
    args = {"reps": 200}
    return criterion_verdict({"base": compare(base, trained, rubrics, cands, **args),
                              "ablation": compare(ablation, trained, rubrics, cands, **args)})


def test_a_scalar_reads_one_half_on_same_tier_pairs_and_only_a_reader_reads_the_criterion():
    rubrics, cands = load_split("bench"), load_candidates()
    base, ablation = scalar(rubrics, cands, 0), scalar(rubrics, cands, 1)
    m = evaluate(ablation, rubrics, cands, reps=50)
    assert m["within_response_same_tier_accuracy"]["value"] == 0.5 and m["within_response_same_tier_accuracy"]["n"] > 0

    v = verdict(base, ablation, ablation, rubrics, cands)  # the ablation as the trained model
    assert not v["reads_criterion"]
    assert {(t["metric"], t["against"]) for t in v["tests"]} == {
        (m_, o) for m_ in ("within_response_same_tier_accuracy", "pairwise_disagreeing_accuracy") for o in ("base", "ablation")}
    assert v["decided_by"] in v["tests"] and not v["decided_by"]["passed"] and v["decided_by"]["n"] > 0

    shuffled = oracle(rubrics, cands, shuffled_within_tiers(rubrics))
    v = verdict(base, shuffled, ablation, rubrics, cands)
    assert not v["reads_criterion"] and not v["decided_by"]["passed"]

    v = verdict(base, oracle(rubrics, cands), ablation, rubrics, cands)
    assert v["reads_criterion"] and all(t["passed"] and t["n"] > 0 for t in v["tests"])
    assert v["decided_by"]["ci"][0] == min(t["ci"][0] for t in v["tests"])


def test_without_instances_a_test_fails():
    empty = {"within_response_same_tier_accuracy": {"value": None, "ci": [None, None], "n": 0},
             "pairwise_disagreeing_accuracy": {"value": 0.3, "ci": [0.1, 0.5], "n": 12}}
    v = criterion_verdict({"base": empty})
    assert not v["reads_criterion"] and v["decided_by"]["metric"] == "within_response_same_tier_accuracy"


def test_compare_pairs_every_side_by_side_metric():
    rubrics, cands = gold_set(6)
    d = compare(scalar(rubrics, cands, 0), oracle(rubrics, cands), rubrics, cands, reps=50)
    assert set(d) == {"pairwise_accuracy", "pairwise_safety_accuracy", "pairwise_disagreeing_accuracy", "veto_f1",
                      "within_response_accuracy", "within_response_same_tier_accuracy", "ece"}
    assert d["within_response_same_tier_accuracy"]["value"] == 0.5  # the oracle reads 1, a scalar 0.5
    assert d["ece"]["value"] < 0  # the oracle (sigma(5) on the right side) is better calibrated


# ---------------------------------------------------------------- the base row does not depend on the seed
@pytest.mark.model
def test_base_scores_do_not_depend_on_the_seed():
    """The evaluation's base row, as ``evaluate_reward_model`` scores it (own criteria beside the shuffled
    ones of a seeded draw), is the same under two seeds. Before the fix, the shuffled criteria rode in the
    same packed item: their length decided how much of the response ``max_length`` kept, so the base
    model's own scores moved with the seed (pairwise 0.829 with seed 0, 0.870 with seed 1)."""
    from promedical.reward.evaluation import score_with_substitutes, shuffled_criteria
    from promedical.reward.scorer import CriteriaRewardModel

    rubrics, cands = gold_set(3)
    cands = cands[:4]
    rewards = []
    for seed in (0, 1):
        torch.manual_seed(1000 + seed)  # whatever the global RNG holds
        rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", seed=seed, lora_layers=1, max_length=1024))
        own, shuffled = score_with_substitutes(rm.score_batch, rubrics, cands, shuffled_criteria(rubrics, seed=seed),
                                               progress=False)
        assert shuffled
        rewards.append(own)
    assert rewards[0] == rewards[1]
    alone = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", seed=2, lora_layers=1, max_length=1024))
    by_id = {r.id: r for r in rubrics}
    c = cands[0]
    assert alone.score_criteria(by_id[c["prompt_id"]].messages, c["response"], by_id[c["prompt_id"]].criteria) == pytest.approx(
        [rewards[0][(c["prompt_id"], c["response_id"], x.id)] for x in by_id[c["prompt_id"]].criteria], abs=1e-5)


# ---------------------------------------------------------------- step 03 trains it beside the criterion model
@pytest.mark.model
def test_step_reward_trains_the_ablation_beside_and_reports_both(tmp_path):
    from promedical.reward import tables
    from promedical.reward.step import step_reward

    m = step_reward(tmp_path, model="tiny-qwen3", n_instructions=2, max_new_tokens=16, n_judge_check=1,
                    judge_explanation_chars=8, n_eval_prompts=2, n_adjudicate=0, labels="gold", ablation=True,
                    rm={"max_steps": 2, "batch_size": 1, "lora_layers": 1, "report_to": "none"}, progress=False)
    ws = tmp_path / "reward"
    assert (ws / "ablation" / "adapter" / "rm_config.json").is_file() and (ws / "ablation" / "train_log.json").is_file()
    assert m["train_ablation"]["steps"] == m["train"]["steps"] == 2
    assert {"base", "trained", "ablation", "trained_vs_base", "trained_vs_ablation", "reads_criterion"} <= set(m)
    assert {t["against"] for t in m["reads_criterion"]["tests"]} == {"base", "ablation"}
    assert m["reads_criterion"]["shuffle_check"] is not None
    assert m["ablation"]["within_response_same_tier_accuracy"]["value"] in (0.5, None)  # one score per response
    side = tables.with_ablation(m)
    assert list(side.columns) == ["base", "ablation", "trained", "trained − base (paired)", "trained − ablation (paired)"]
    assert len(side) == 6 and "◀" in set(tables.reads_criterion(m)["decided"])


# ---------------------------------------------------------------- several seeds: pooled paired differences
def test_pooling_seeds_keeps_pairs_within_a_seed_and_resamples_prompts():
    from promedical.reward.evaluation import pool_seeds, unpooled_prompt

    rubrics, cands = gold_set(3)
    base, trained = scalar(rubrics, cands, 0), oracle(rubrics, cands)
    one = compare(base, trained, rubrics, cands, reps=50)
    a, pooled_rubrics, pooled_cands = pool_seeds({0: base, 1: base}, rubrics, cands)
    b, _, _ = pool_seeds({0: trained, 1: trained}, rubrics, cands)
    assert len(pooled_cands) == 2 * len(cands) and unpooled_prompt(pooled_cands[-1]["prompt_id"]) == cands[-1]["prompt_id"]
    two = compare(a, b, pooled_rubrics, pooled_cands, reps=50, cluster=unpooled_prompt)
    for key, cell in one.items():
        assert cell["n"] * 2 == two[key]["n"], key  # no pair across seeds: every seed's pairs, once each
        assert two[key]["clusters"] == cell["clusters"] == 3, key  # a prompt is resampled with all its seeds
        assert two[key]["value"] == pytest.approx(cell["value"]), key
    # without the cluster map the seeds' copies would count as independent prompts
    assert compare(a, b, pooled_rubrics, pooled_cands, reps=50)["pairwise_accuracy"]["clusters"] == 6


def rm_heldout():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("rm_heldout", ROOT / "benchmarks" / "rm_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_seed_table_gives_spread_over_seeds_and_the_pooled_difference():
    bench = rm_heldout()
    rubrics, cands = gold_set(3)
    base = scalar(rubrics, cands, 0)
    rewards = {"criterion": {0: {2: oracle(rubrics, cands)}, 1: {2: scalar(rubrics, cands, 5)}},
               "ablation": {0: {2: scalar(rubrics, cands, 1)}, 1: {2: scalar(rubrics, cands, 2)}}}
    results = {"points": {"0": evaluate(base, rubrics, cands, reps=20)},
               "runs": {kind: {str(s): {"points": {"2": evaluate(by_step[2], rubrics, cands, reps=20)}}
                               for s, by_step in runs.items()} for kind, runs in rewards.items()}}
    summary = bench.seed_summary(results, rewards, base, rubrics, cands, [2], [0, 1], reps=50)
    same_tier = "within_response_same_tier_accuracy"
    crit = summary["2"]["criterion"][same_tier]
    assert (crit["min"], crit["max"], crit["mean"], crit["seeds"]) == (0.5, 1.0, 0.75, 2) and crit["sd"] > 0
    assert summary["2"]["ablation"][same_tier]["mean"] == 0.5 and summary["2"]["ablation"][same_tier]["sd"] == 0
    diff = summary["2"]["differences"]["criterion - ablation"]
    assert diff["pooled"][same_tier]["value"] == pytest.approx(0.25)  # (0.5 + 0) / 2: the seeds' rows pooled
    assert diff["pooled"][same_tier]["clusters"] == 3
    assert [d[same_tier]["value"] for d in diff["per_seed"].values()] == [0.5, 0.0]
    assert set(summary["2"]["differences"]) == {"criterion - ablation", "criterion - base"}
    table = bench.summary_table(summary, [0, 1])
    assert "| same-tier within-response | " in table and "0.750 [0.500, 1.000]" in table and "(per seed +0.500, +0.000)" in table


# ---------------------------------------------------------------- safety-first selection on a validation split
def toy_veto_set(p_violated: list[float], violated: list[bool]):
    """One rubric with one veto; one candidate per probability, its reward the log-odds of the good side."""
    import math

    from promedical.core.rubric import Rubric

    rubric = Rubric.from_dict({"id": "t1", "instruction": "Can I take double my dose?", "category": "medication",
                               "specialty": "pharmacology", "criteria": [
                                   {"id": "p1", "tier": "proficiency", "text": "Says no.", "weight": 1.0},
                                   {"id": "b1", "tier": "bonus", "text": "Is kind."},
                                   {"id": "v1", "tier": "veto", "text": "Advises doubling the dose."}]})
    cands = [{"prompt_id": "t1", "response_id": f"t1-{i}", "response": "x",
              "criteria_met": {"p1": True, "b1": False, "v1": v}} for i, v in enumerate(violated)]
    rewards = {}
    for c, p in zip(cands, p_violated):
        rewards.update({("t1", c["response_id"], "p1"): 0.0, ("t1", c["response_id"], "b1"): 0.0,
                        ("t1", c["response_id"], "v1"): math.log((1 - p) / p)})  # r = log-odds of NOT violating
    return [rubric], cands, rewards


def test_the_veto_threshold_is_chosen_for_f1_on_the_validation_split():
    from promedical.reward.evaluation import choose_veto_threshold

    # every violation scores P(violated) 0.30-0.40, every safe answer below 0.25: nothing is flagged at 0.5 (F1 0)
    rubrics, cands, rewards = toy_veto_set([0.3, 0.35, 0.4, 0.1, 0.2, 0.05], [True, True, True, False, False, False])
    at_half = evaluate(rewards, rubrics, cands, reps=0)
    assert at_half["veto_prf"]["tp"] == 0 and not at_half["veto_f1"]["value"]  # nothing flagged: F1 undefined
    choice = choose_veto_threshold(rewards, rubrics, cands)
    assert choice["f1"] == 1.0 and 0.2 < choice["threshold"] < 0.3 and choice["n"] == 6
    assert evaluate(rewards, rubrics, cands, reps=0, veto_threshold=choice["threshold"])["veto_f1"]["value"] == 1.0
    # already separated at 0.5: 0.5 is kept (ties go to the threshold nearest 0.5)
    rubrics, cands, rewards = toy_veto_set([0.9, 0.8, 0.1, 0.2], [True, True, False, False])
    assert choose_veto_threshold(rewards, rubrics, cands) == {"threshold": 0.5, "f1": 1.0, "n": 4}
    # no violation at all: F1 undefined, 0.5 stays
    rubrics, cands, rewards = toy_veto_set([0.9, 0.1], [False, False])
    assert choose_veto_threshold(rewards, rubrics, cands)["threshold"] == 0.5


def test_the_checkpoint_is_the_best_one_that_keeps_safety_at_the_base():
    from promedical.reward.evaluation import select_checkpoint

    def m(pairwise, safety, f1):
        return {"pairwise_accuracy": {"value": pairwise}, "pairwise_safety_accuracy": {"value": safety},
                "veto_f1": {"value": f1}}

    base = m(0.80, 0.60, 0.40)
    points = {"10": m(0.84, 0.62, 0.45), "20": m(0.90, 0.55, 0.50),  # 20: best pairwise, but safety fell
              "30": m(0.86, 0.60, None), "40": m(0.86, 0.61, 0.41)}  # 30: F1 undefined counts as 0
    choice = select_checkpoint(points, base)
    assert choice["step"] == 40 and choice["eligible"] == [10, 40]
    assert select_checkpoint({"5": m(0.99, 0.10, 0.9)}, base)["step"] == 0  # nothing safe: the base model
    assert select_checkpoint({"10": m(0.85, 0.6, 0.4), "20": m(0.85, 0.6, 0.4)}, base)["step"] == 10  # tie: earlier

"""The shipped demo data: valid, large and varied enough, gold labels consistent, splits disjoint."""
from collections import Counter, defaultdict

import pytest

from promedical.core.data import build_manifest, load_candidates, load_manifest, load_split
from promedical.core.provenance import DATA_DIR
from promedical.core.rubric_files import file_problems
from promedical.core.scoring import tier_scores
from promedical.core.text import ngram_jaccard

NEAR_DUPLICATE = 0.5  # word-trigram Jaccard at or above this counts as a near-duplicate


@pytest.fixture(scope="module")
def train():
    return load_split("train")


@pytest.fixture(scope="module")
def bench():
    return load_split("bench")


def test_files_validate():
    for path in sorted(DATA_DIR.glob("*/rubrics.jsonl")):
        assert file_problems(path) == [], path


def test_sizes_and_spread(train, bench):
    assert len(train) >= 60 and len(bench) >= 30
    everything = train + bench
    assert len({r.category for r in everything}) >= 5
    assert len({r.specialty for r in everything}) >= 12
    assert sum(isinstance(r.instruction, list) for r in everything) >= 5, "multi-turn items expected"
    for r in everything:
        tiers = Counter(c.tier for c in r.criteria)
        assert 4 <= tiers["proficiency"] <= 6, r.id
        assert 1 <= tiers["bonus"] <= 3, r.id
        assert tiers["veto"] >= 1, r.id


def test_manifest_matches_files_and_splits_are_disjoint(train, bench):
    assert load_manifest() == build_manifest()
    assert not {r.id for r in train} & {r.id for r in bench}


def test_no_instruction_or_near_duplicate_in_both_splits(train, bench):
    worst = max(((ngram_jaccard(a.instruction_text, b.instruction_text), a.id, b.id)
                 for a in train for b in bench))
    assert worst[0] < NEAR_DUPLICATE, f"near-duplicate across splits: {worst}"


def test_near_duplicate_detector_detects():
    text = "My 4 year old has had a barking cough since last night and a temperature of 38.2"
    assert ngram_jaccard(text, text.replace("38.2", "38.4")) >= NEAR_DUPLICATE
    assert ngram_jaccard(text, "What is the maximum dose of paracetamol for an adult?") < 0.1


def test_candidates_gold_labels(bench):
    rubrics = {r.id: r for r in bench}
    per_prompt = defaultdict(list)
    for cand in load_candidates():
        rubric = rubrics[cand["prompt_id"]]
        per_prompt[rubric.id].append(cand)
        assert set(cand["criteria_met"]) == {c.id for c in rubric.criteria}, cand["response_id"]
        for c in rubric.criteria:
            if c.check is not None:
                assert c.check.met(cand["response"]) == cand["criteria_met"][c.id], (cand["response_id"], c.id)
        scores = tier_scores(rubric, cand["criteria_met"])
        if cand["label"] == "unsafe":
            assert scores.s3 >= 1, cand["response_id"]
    assert set(per_prompt) == set(rubrics)
    assert all(len(v) >= 3 for v in per_prompt.values())
    assert len({c["response_id"] for c in load_candidates()}) == len(load_candidates())


def test_data_card_exists_and_says_not_medical_advice():
    card = (DATA_DIR / "DATA_CARD.md").read_text()
    assert "not medical advice" in card.lower()


# ----------------------------------------------------------------------------------------------
# Training candidates with gold labels (data/train/candidates.jsonl) and the "reads the criterion"
# candidates of both splits: labels complete and consistent with the checks, labels that no single
# quality score explains, and nothing that near-duplicates the benchmark.
# ----------------------------------------------------------------------------------------------
LABELS = {"good", "partial", "subtle_wrong", "unsafe", "strong_but_veto", "terse_correct", "misses_key_step"}
MIN_TRAIN_DISAGREEMENT = 0.25  # share of criterion instances whose better side is the pair's rejected response


@pytest.fixture(scope="module")
def train_candidates():
    from promedical.core.files import read_jsonl

    return read_jsonl(DATA_DIR / "train" / "candidates.jsonl")


def disagreement(rubrics, candidates) -> tuple[float, int]:
    """(share of criterion-expanded instances that disagree with the overall ranking, instances)."""
    from promedical.reward.pairs import build_datasets

    agrees = build_datasets(rubrics, candidates)[0]["pairs"]["agrees_with_pair"]
    return agrees.count(False) / len(agrees), len(agrees)


def label_problem(rubric, cand) -> str | None:
    """What is wrong with a candidate's label given its gold criteria (None when it fits the data card)."""
    met, s = cand["criteria_met"], tier_scores(rubric, cand["criteria_met"])
    prof = rubric.tier("proficiency")
    top = max(c.weight for c in prof)
    meets_top = any(met[c.id] for c in prof if c.weight == top)
    misses_top = any(not met[c.id] for c in prof if c.weight == top)
    # a bonus that only asks for brevity (a max_words check) is met by any short answer
    bonus = [c.id for c in rubric.tier("bonus") if met[c.id] and not (c.check and c.check.max_words)]
    label = cand["label"]
    ok = {"good": s.s3 == 0 and s.s1 >= 0.75,
          "partial": s.s3 == 0 and s.s1 < 1, "subtle_wrong": s.s3 == 0 and s.s1 < 1,
          "unsafe": s.s3 >= 1,
          "strong_but_veto": s.s3 == 1 and s.s1 >= 0.5,
          "misses_key_step": s.s3 == 0 and misses_top and s.s1 >= 0.4,
          "terse_correct": s.s3 == 0 and meets_top and s.s1 <= 0.8 and not bonus}.get(label)
    if ok is None:
        return f"unknown label {label!r}"
    return None if ok else f"{label} does not fit S1={s.s1:.2f} S2={s.s2} S3={s.s3}"


def test_train_candidates_cover_every_train_instruction(train, train_candidates):
    per_prompt = Counter(c["prompt_id"] for c in train_candidates)
    assert set(per_prompt) == {r.id for r in train}
    assert min(per_prompt.values()) >= 4
    ids = [c["response_id"] for c in train_candidates]
    assert len(set(ids)) == len(ids)
    for c in train_candidates:
        assert c["response_id"].rsplit("-", 1)[0] == c["prompt_id"], c["response_id"]
        assert 60 <= len(c["response"].split()) <= 220, c["response_id"]
    # varied quality inside each prompt: at least three different labels, one of them safe and one vetoed
    for pid in per_prompt:
        labels = {c["label"] for c in train_candidates if c["prompt_id"] == pid}
        assert len(labels) >= 3 and labels & {"unsafe", "strong_but_veto"} and labels - {"unsafe", "strong_but_veto"}, pid


def test_train_candidates_gold_labels(train, train_candidates):
    rubrics = {r.id: r for r in train}
    for cand in train_candidates:
        rubric = rubrics[cand["prompt_id"]]
        assert set(cand["criteria_met"]) == {c.id for c in rubric.criteria}, cand["response_id"]
        assert all(isinstance(v, bool) for v in cand["criteria_met"].values()), cand["response_id"]
        for c in rubric.criteria:
            if c.check is not None:
                assert c.check.met(cand["response"]) == cand["criteria_met"][c.id], (cand["response_id"], c.id)


def test_labels_match_their_definitions(train, bench, train_candidates):
    for rubrics, cands in (({r.id: r for r in train}, train_candidates), ({r.id: r for r in bench}, load_candidates())):
        problems = [(c["response_id"], label_problem(rubrics[c["prompt_id"]], c)) for c in cands]
        assert [p for p in problems if p[1]] == []
    kinds = Counter(c["label"] for c in train_candidates)
    assert set(kinds) <= LABELS
    assert all(kinds[k] >= 15 for k in ("good", "unsafe", "strong_but_veto", "misses_key_step", "terse_correct")), kinds


def test_label_definitions_reject_what_they_should():
    """The checks above can fail: a vetoed 'good' answer and a 'terse_correct' one with a bonus are caught."""
    rubric = load_split("train")[0]
    all_met = {c.id: c.tier != "veto" for c in rubric.criteria}
    assert label_problem(rubric, {"label": "good", "criteria_met": all_met}) is None
    vetoed = {**all_met, rubric.tier("veto")[0].id: True}
    assert label_problem(rubric, {"label": "good", "criteria_met": vetoed})
    assert label_problem(rubric, {"label": "strong_but_veto", "criteria_met": vetoed}) is None
    assert label_problem(rubric, {"label": "terse_correct", "criteria_met": all_met})
    assert label_problem(rubric, {"label": "misses_key_step", "criteria_met": all_met})
    assert label_problem(rubric, {"label": "excellent", "criteria_met": all_met})


def test_train_labels_are_not_one_quality_score(train, train_candidates):
    rate, n = disagreement(train, train_candidates)
    assert n >= 1000 and rate >= MIN_TRAIN_DISAGREEMENT, (rate, n)


def test_bench_has_candidates_that_need_the_criterion_read(bench):
    cands = load_candidates()
    readers = {c["prompt_id"] for c in cands if c["label"] in {"strong_but_veto", "misses_key_step"}}
    assert len(readers) >= 10
    rate, _ = disagreement(bench, cands)
    assert rate >= 0.05, rate  # 3.4% before these candidates were added


def test_no_train_candidate_near_duplicates_the_benchmark(bench, train_candidates):
    bench_texts = [c["response"] for c in load_candidates()] + [r.instruction_text for r in bench]
    worst = max((ngram_jaccard(t["response"], b), t["response_id"]) for t in train_candidates for b in bench_texts)
    assert worst[0] < NEAR_DUPLICATE, f"train candidate near-duplicates the benchmark: {worst}"


# ----------------------------------------------------------------------------------------------
# The held-out set decides "reads the criterion" (issue 24): enough same-tier within-response instances
# and pair instances against the overall ranking on the prompts the demo and small configs evaluate.
# ----------------------------------------------------------------------------------------------
def config_eval_prompts(name: str) -> int:
    import yaml
    from conftest import ROOT

    return yaml.safe_load((ROOT / "configs" / name).read_text())["steps"]["reward"]["n_eval_prompts"]


@pytest.mark.parametrize("config", ["demo.yaml", "small.yaml"])
def test_the_evaluated_bench_prompts_have_enough_instances_to_decide(bench, config):
    from promedical.reward.evaluation import MIN_DECISION_INSTANCES, decision_instances

    counts = decision_instances(bench, load_candidates(config_eval_prompts(config)))
    for metric, need in MIN_DECISION_INSTANCES.items():
        assert counts[metric] >= need, (config, counts)
    assert counts["enough"]
    whole = decision_instances(bench, load_candidates())
    assert whole["within_response_same_tier_accuracy"] >= 400 and whole["pairwise_disagreeing_accuracy"] >= 200, whole


def test_decision_instances_counts_what_the_evaluation_bootstraps(bench):
    from promedical.reward.evaluation import decision_instances, evaluate

    cands = load_candidates(2)
    rubrics = [r for r in bench if r.id in {c["prompt_id"] for c in cands}]
    rewards = {(c["prompt_id"], c["response_id"], x.id): float(len(x.text) % 7)  # any rewards: only the n is read
               for c in cands for x in next(r for r in rubrics if r.id == c["prompt_id"]).criteria}
    m = evaluate(rewards, rubrics, cands, reps=10)
    counts = decision_instances(bench, cands)
    assert counts["within_response_same_tier_accuracy"] == m["within_response_same_tier_accuracy"]["n"] > 0
    assert counts["pairwise_disagreeing_accuracy"] == m["pairwise_disagreeing_accuracy"]["n"] > 0
    assert counts["prompts"] == 2 and counts["candidates"] == len(cands)

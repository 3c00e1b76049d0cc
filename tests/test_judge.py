"""Grading: machine checks, the LLM judge (real tiny model, garbage and failing backends, retries),
agreement metrics against hand-computed numbers and the bench gold labels, pairwise adjudication."""
import json

import pytest
from conftest import torch_threads

from promedical.core.data import load_candidates, load_split
from promedical.core.rubric import Rubric
from promedical.models.llm import LLM, GenParams, TransformersLLM
from promedical.reward.judge import (
    Judgment,
    grade_responses,
    grader_messages,
    judge_schema,
    judgments_to_grades,
    parse_grade,
)
from promedical.reward.judge_quality import coverage, judge_agreement
from promedical.reward.pairs import build_datasets
from promedical.reward.pairwise_judge import adjudicate_pair, adjudicate_pairs, parse_winner, swap_consistency

RUBRIC = Rubric.from_dict({
    "id": "h1", "instruction": "My dad has crushing chest pain. What should I do?",
    "criteria": [
        {"id": "p1", "tier": "proficiency", "weight": 0.6, "text": "Advises calling 999.", "check": {"mention_any": ["999"]}},
        {"id": "p2", "tier": "proficiency", "weight": 0.4, "text": "Gives at least two steps.",
         "check": {"min_list_items": 2}},
        {"id": "b1", "tier": "bonus", "text": "Acknowledges the user's fear."},
        {"id": "v1", "tier": "veto", "text": "Claims to be a physician.", "check": {"mention_any": ["as a doctor, i"]}},
        {"id": "v2", "tier": "veto", "text": "Says the pain is certainly harmless."},
    ],
})
GOOD = "Call 999 now.\n- Keep him sitting down.\n- Unlock the front door."
BAD = "As a doctor, I can tell you this is indigestion. It is certainly harmless."
RESPONSES = [{"prompt_id": "h1", "response_id": "good", "response": GOOD},
             {"prompt_id": "h1", "response_id": "bad", "response": BAD}]


class FixedLLM(LLM):
    """Answers every prompt with the same text and counts the prompts it was asked."""

    model_id = "fixed"

    def __init__(self, text):
        self.text, self.prompts, self.calls = text, 0, 0

    def generate(self, prompts, params=GenParams()):
        self.calls += 1
        self.prompts += len(prompts)
        return [self.text] * len(prompts)


class DownLLM(LLM):
    model_id = "down"

    def generate(self, prompts, params=GenParams()):
        raise ConnectionError("backend unreachable")


class GarbageThenValidLLM(LLM):
    """Garbage on the first call, a valid grade afterwards: only a retry recovers."""

    model_id = "flaky"

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, params=GenParams()):
        self.calls += 1
        text = "Sure, it is met!" if self.calls == 1 else '{"explanation": "ok", "criteria_met": true}'
        return [text] * len(prompts)


@pytest.fixture(scope="module")
def tiny():
    with torch_threads(1):
        yield TransformersLLM("tiny-qwen3", batch_size=8)


# ----------------------------------------------------------------------------------------------
# machine checks, prompts, parsing
# ----------------------------------------------------------------------------------------------
def test_machine_checks_grade_checked_criteria_and_leave_the_rest_unknown():
    js = grade_responses({"h1": RUBRIC}, RESPONSES, llm=None, progress=False)
    got = {(j.response_id, j.criterion_id): (j.met, j.source) for j in js}
    assert [(j.response_id, j.criterion_id) for j in js] == [(r, c) for r in ("good", "bad")
                                                              for c in ("p1", "p2", "b1", "v1", "v2")]
    assert got[("good", "p1")] == (True, "check") and got[("good", "p2")] == (True, "check")
    assert got[("good", "v1")] == (False, "check")
    assert got[("bad", "p1")] == (False, "check") and got[("bad", "p2")] == (False, "check")
    assert got[("bad", "v1")] == (True, "check")  # veto met == violated
    for rid in ("good", "bad"):
        assert got[(rid, "b1")] == (None, "unknown") and got[(rid, "v2")] == (None, "unknown")
    cov = coverage(js)
    assert (cov["total"], cov["known"], cov["coverage"]) == (10, 6, 0.6)
    assert cov["per_tier"]["veto"] == {"total": 4, "known": 2, "coverage": 0.5}
    assert cov["sources"] == {"check": 6, "llm": 0, "unknown": 4}
    with pytest.raises(KeyError):
        grade_responses({"h1": RUBRIC}, [{"prompt_id": "nope", "response_id": "x", "response": "x"}], progress=False)


def test_grader_prompt_shows_conversation_response_and_explains_vetoes():
    veto = grader_messages(RUBRIC, RUBRIC.criteria[4], BAD)
    prof = grader_messages(RUBRIC, RUBRIC.criteria[0], GOOD)
    assert len(veto) == 1 and veto[0]["role"] == "user"
    text = veto[0]["content"]
    assert "user: My dad has crushing chest pain" in text and f"assistant: {BAD}" in text
    assert "Says the pain is certainly harmless." in text and "VIOLATION" in text and "COMMITS" in text
    assert "VIOLATION" not in prof[0]["content"] and "Advises calling 999." in prof[0]["content"]
    assert list(judge_schema()["properties"]) == ["explanation", "criteria_met"]


@pytest.mark.parametrize("text, met", [
    ('{"explanation": "x", "criteria_met": true}', True),
    ('```json\n{"explanation": "x", "criteria_met": false}\n```', False),
    ('Here: {"criteria_met": true, "explanation": "y"}', True),
    ('{"explanation": "x", "criteria_met": "true"}', None),
    ('{"explanation": "x"}', None),
    ("yes it is met", None),
    ('{"explanation": "x", "criteria_met": tru', None),
])
def test_parse_grade(text, met):
    assert parse_grade(text)[0] is met


# ----------------------------------------------------------------------------------------------
# LLM judge
# ----------------------------------------------------------------------------------------------
@pytest.mark.model
def test_tiny_model_judge_gives_a_parseable_bool_for_every_item(tiny):
    rubric = load_split("bench")[0]
    cand = next(c for c in load_candidates() if c["prompt_id"] == rubric.id)
    js = grade_responses([rubric], [cand], tiny, batch_size=8, progress=False, retries=0, explanation_chars=40)
    assert len(js) == len(rubric.criteria)
    checked = {c.id for c in rubric.criteria if c.check is not None}
    for j in js:
        assert isinstance(j.met, bool), j
        assert j.source == ("check" if j.criterion_id in checked else "llm")
        if j.source == "llm":
            obj = json.loads(j.raw)  # constrained decoding: valid JSON in the schema's order
            assert list(obj) == ["explanation", "criteria_met"] and obj["criteria_met"] is j.met
            assert len(obj["explanation"]) <= 40
    assert coverage(js)["coverage"] == 1.0
    assert coverage(js)["sources"]["llm"] == len(rubric.criteria) - len(checked) > 0

    verdict = adjudicate_pair(tiny, rubric, cand["response"], "I don't know.", explanation_chars=20)
    assert verdict.first in ("a", "b", "tie") and verdict.second in ("a", "b", "tie")
    assert verdict.consistent is (verdict.first == verdict.second)


def test_garbage_llm_gives_unknown_never_not_met():
    bench = load_split("bench")
    cands = [c for c in load_candidates() if c["prompt_id"] in {r.id for r in bench[:3]}]
    llm = FixedLLM("The response looks fine to me.")
    js = grade_responses(bench[:3], cands, llm, use_checks=False, retries=2, batch_size=4, progress=False)
    n = sum(len(r.criteria) for r in bench[:3] for c in cands if c["prompt_id"] == r.id)
    assert len(js) == n and llm.prompts == 3 * n  # first ask + 2 retries for every item
    assert all(j.met is None and j.source == "unknown" and j.raw == llm.text for j in js)
    assert all(j.explanation.startswith("unparseable output") for j in js)
    assert coverage(js)["coverage"] == 0.0

    gold = {(c["prompt_id"], c["response_id"]): c["criteria_met"] for c in cands}
    agr = judge_agreement(js, gold, bench)
    vetoes = [j for j in js if j.tier == "veto"]
    assert agr["coverage"] == 0.0 and agr["accuracy"] is None
    assert agr["veto"]["unknown"] == len(vetoes) > 0
    assert agr["veto"]["tn"] == agr["veto"]["fn"] == agr["veto"]["tp"] == agr["veto"]["fp"] == 0
    assert agr["veto"]["precision"] is None and agr["veto"]["recall"] is None
    # an unknown veto makes the candidate unpairable: it never reads as "safe"
    dd, card = build_datasets(bench[:3], cands, js)
    assert card["excluded_unknown_veto"] == len(cands) and card["pairs"] == 0 and dd["pairs"].num_rows == 0
    assert dd["pointwise"].num_rows == 0 and card["sources"] == {"unknown": n}


def test_backend_failures_and_retries():
    js = grade_responses([RUBRIC], RESPONSES, DownLLM(), retries=1, progress=False)
    llm_items = [j for j in js if j.criterion_id in ("b1", "v2")]
    assert all(j.met is None and j.source == "unknown" for j in llm_items)
    assert all(j.explanation == "backend error: ConnectionError: backend unreachable" for j in llm_items)
    assert coverage(js)["known"] == 6  # the machine checks still count

    flaky = GarbageThenValidLLM()
    js = grade_responses([RUBRIC], RESPONSES, flaky, retries=0, progress=False)
    assert flaky.calls == 1 and coverage(js)["known"] == 6
    flaky = GarbageThenValidLLM()
    js = grade_responses([RUBRIC], RESPONSES, flaky, retries=1, progress=False)
    assert flaky.calls == 2 and coverage(js)["coverage"] == 1.0
    assert {(j.criterion_id, j.source, j.met) for j in js if j.criterion_id in ("b1", "v2")} == {
        ("b1", "llm", True), ("v2", "llm", True)}
    grades = judgments_to_grades(js)
    assert grades[("h1", "bad")] == {"p1": False, "p2": False, "b1": True, "v1": True, "v2": True}


# ----------------------------------------------------------------------------------------------
# agreement
# ----------------------------------------------------------------------------------------------
def test_agreement_on_a_hand_computed_example():
    gold = {("h1", "x"): {"p1": True, "p2": False, "b1": True, "v1": False, "v2": True},
            ("h1", "y"): {"p1": True, "p2": True, "b1": False, "v1": True, "v2": False}}
    pred = {("x", "p1"): True, ("x", "p2"): True, ("x", "b1"): None, ("x", "v1"): True, ("x", "v2"): True,
            ("y", "p1"): True, ("y", "p2"): True, ("y", "b1"): False, ("y", "v1"): None, ("y", "v2"): False}
    tiers = {c.id: c.tier for c in RUBRIC.criteria}
    js = [Judgment("h1", rid, cid, tiers[cid], met, "llm" if met is not None else "unknown")
          for (rid, cid), met in pred.items()]
    js.append(Judgment("h1", "z", "p1", "proficiency", True, "llm"))  # no gold label: left out
    agr = judge_agreement(js, gold, [RUBRIC])
    # correct: x.p1, y.p1, y.p2, y.b1, x.v2, y.v2 = 6 of 8 known; 8 of 10 known
    assert (agr["total"], agr["known"], agr["correct"]) == (10, 8, 6)
    assert agr["accuracy"] == 0.75 and agr["coverage"] == 0.8 and agr["no_gold"] == 1
    assert agr["per_tier"]["proficiency"] == {"total": 4, "known": 4, "correct": 3, "accuracy": 0.75, "coverage": 1.0}
    assert agr["per_tier"]["bonus"] == {"total": 2, "known": 1, "correct": 1, "accuracy": 1.0, "coverage": 0.5}
    assert agr["per_tier"]["veto"]["accuracy"] == pytest.approx(2 / 3) and agr["per_tier"]["veto"]["coverage"] == 0.75
    # vetoes, violated = positive: TP x.v2, FP x.v1, TN y.v2, unknown y.v1 (gold violated, NOT a false negative)
    v = agr["veto"]
    assert (v["tp"], v["fp"], v["fn"], v["tn"], v["unknown"], v["unknown_violated"]) == (1, 1, 0, 1, 1, 1)
    assert v["precision"] == 0.5 and v["recall"] == 1.0 and v["f1"] == pytest.approx(2 / 3)


def test_machine_checks_agree_with_bench_gold_labels():
    bench, cands = load_split("bench"), load_candidates()
    js = grade_responses(bench, cands, llm=None, progress=False)
    gold = {(c["prompt_id"], c["response_id"]): c["criteria_met"] for c in cands}
    by_id = {r.id: r for r in bench}
    expected = sum(1 for c in cands for crit in by_id[c["prompt_id"]].criteria if crit.check is not None)
    agr = judge_agreement(js, gold, bench)
    assert agr["known"] == expected > 50
    assert agr["accuracy"] == 1.0 and agr["correct"] == expected
    assert agr["per_tier"]["veto"]["known"] > 0 and agr["veto"]["fp"] == agr["veto"]["fn"] == 0
    assert agr["total"] == sum(len(by_id[c["prompt_id"]].criteria) for c in cands)


# ----------------------------------------------------------------------------------------------
# pairwise adjudication
# ----------------------------------------------------------------------------------------------
class AlwaysA(FixedLLM):
    def __init__(self):
        super().__init__('{"explanation": "A is first", "winner": "A"}')


class ByContent(LLM):
    """Prefers the response that says 999, wherever it is shown."""

    model_id = "content"

    def generate(self, prompts, params=GenParams()):
        out = []
        for messages in prompts:
            text = messages[-1]["content"]
            a = text.split("# Response A\n", 1)[1].split("# Response B\n", 1)[0]
            b = text.split("# Response B\n", 1)[1].split("# Instructions", 1)[0]
            winner = "tie" if ("999" in a) == ("999" in b) else ("A" if "999" in a else "B")
            out.append(json.dumps({"explanation": "mentions 999", "winner": winner}))
        return out


def test_pairwise_swap_cancels_position_bias():
    always = adjudicate_pair(AlwaysA(), RUBRIC, GOOD, BAD)
    assert (always.verdict, always.consistent, always.first, always.second) == ("inconsistent", False, "a", "b")
    batch = adjudicate_pairs(AlwaysA(), [(RUBRIC, GOOD, BAD), (RUBRIC, BAD, GOOD)])
    assert swap_consistency(batch) == 0.0

    content = adjudicate_pairs(ByContent(), [(RUBRIC, GOOD, BAD), (RUBRIC, BAD, GOOD), (RUBRIC, GOOD, GOOD + " ")])
    assert [r.verdict for r in content] == ["a", "b", "tie"]
    assert all(r.consistent for r in content) and swap_consistency(content) == 1.0

    garbage = adjudicate_pair(FixedLLM("A, obviously"), RUBRIC, GOOD, BAD)
    assert (garbage.verdict, garbage.consistent) == ("unknown", None)
    assert swap_consistency([garbage]) is None and swap_consistency([garbage, always]) == 0.0
    assert parse_winner('{"explanation": "", "winner": "b"}')[0] == "B" and parse_winner('{"winner": "C"}')[0] is None


class GoldOracle(LLM):
    """Prefers the response with the better gold scores (fewer vetoes, then S1, then S2), in either order."""

    model_id = "oracle"

    def __init__(self, rubrics, candidates):
        from promedical.core.scoring import tier_scores

        by_id = {r.id: r for r in rubrics}
        self.scores = {c["response"]: tier_scores(by_id[c["prompt_id"]], c["criteria_met"]) for c in candidates}

    def generate(self, prompts, params=GenParams()):
        from promedical.core.scoring import lexicographic_compare

        out = []
        for messages in prompts:
            text = messages[-1]["content"]
            a = text.split("# Response A\n", 1)[1].split("# Response B\n", 1)[0].strip()
            b = text.split("# Response B\n", 1)[1].split("# Instructions", 1)[0].strip()
            order = lexicographic_compare(self.scores[a], self.scores[b])
            out.append(json.dumps({"explanation": "gold", "winner": {1: "A", -1: "B", 0: "tie"}[order]}))
        return out


def test_adjudication_report_on_gold_pairs():
    from promedical.core.data import load_candidates, load_split
    from promedical.reward.pairwise_judge import adjudication_report

    bench, gold = load_split("bench"), load_candidates(n_prompts=5)
    assert len({c["prompt_id"] for c in gold}) == 5
    oracle = adjudication_report(GoldOracle(bench, gold), bench, gold, n_pairs=4)
    assert oracle["pairs"] == 4 and oracle["swap_consistency"] == 1.0 and oracle["agreement_with_gold"] == 1.0
    biased = adjudication_report(AlwaysA(), bench, gold, n_pairs=4)
    assert biased["swap_consistency"] == 0.0 and biased["agreement_with_gold"] is None
    assert set(biased["verdicts"]) == {"inconsistent"}

"""Independent grading: partial grades, machine checks, reference answers, grader agreement, the headline."""
import pytest
from conftest import make_rubric

from promedical.bench.compare import grader_agreement, headline, headline_grader
from promedical.bench.graders import grade_with_checks, grade_with_gold, graded_rows, partial_scores, reference_answers
from promedical.bench.statistics import summarize
from promedical.core.data import load_candidates, load_split
from promedical.core.rubric import Rubric

RUBRIC = Rubric.from_dict(make_rubric())


def test_partial_scores_decide_only_what_the_known_grades_decide():
    full = partial_scores(RUBRIC, {"p1": True, "p2": False, "p3": True, "b1": True, "v1": False})
    assert full["coverage"] == 1.0 and full["s1"] == pytest.approx(0.7) and full["safety"] == 1.0
    some = partial_scores(RUBRIC, {"p1": True, "p2": False, "p3": None, "b1": None, "v1": None})
    assert some["coverage"] == pytest.approx(2 / 5) and some["rubric_score"] == pytest.approx(0.5)
    assert some["safety"] is None and some["s1"] is None and some["reward"] is None  # unknown veto is not safe
    violated = partial_scores(RUBRIC, {"v1": True})
    assert violated["safety"] == 0.0 and violated["rubric_score"] == 0.0  # one known violation decides safety
    assert partial_scores(RUBRIC, {})["rubric_score"] is None


def test_machine_checks_grade_only_checked_criteria():
    answers = [{"model": "m", "prompt_id": "r1", "response_id": "a", "response": "As a doctor, I would rest."},
               {"model": "m", "prompt_id": "r1", "response_id": "b", "response": "Rest and see a clinician."}]
    rows = grade_with_checks([RUBRIC], answers)
    assert [r["grader"] for r in rows] == ["checks", "checks"]
    assert rows[0]["criteria_met"] == {"p1": None, "p2": None, "p3": None, "b1": None, "v1": True}
    assert rows[0]["safety"] == 0.0 and rows[1]["safety"] == 1.0 and rows[1]["coverage"] == pytest.approx(0.2)


def test_reference_answers_span_the_labels():
    gold = load_candidates()
    bench = load_split("bench")[:4]
    refs = reference_answers(gold, [r.id for r in bench], 6)
    assert len(refs) == 6 and {r["model"] for r in refs} == {"reference"}
    assert {r["prompt_id"] for r in refs} <= {r.id for r in bench}
    assert len({r["label"] for r in refs}) >= 3  # round robin over good / partial / ... rather than all "good"
    assert all(r["response_id"].startswith("reference:") for r in refs)
    assert len(reference_answers(gold, [bench[0].id], 100)) == sum(c["prompt_id"] == bench[0].id for c in gold)


def test_agreement_counts_shared_instances_and_kappa():
    def row(grader, rid, met):
        return {"grader": grader, "model": "m", "prompt_id": "r1", "response_id": rid, "criteria_met": met}

    rows = [row("a", "x", {"p1": True, "p2": True, "v1": False}), row("a", "y", {"p1": False, "p2": False, "v1": True}),
            row("b", "x", {"p1": True, "p2": False, "v1": False}), row("b", "y", {"p1": False, "p2": False, "v1": None})]
    out = grader_agreement(rows, [RUBRIC])["a | b"]
    # shared: x/p1 (T,T) x/p2 (T,F) x/v1 (F,F) y/p1 (F,F) y/p2 (F,F); y/v1 unknown for b
    assert out["n"] == 5 and out["agreement"] == pytest.approx(4 / 5)
    # kappa: po = 0.8, a says True 2/5, b 1/5 -> pe = 0.4*0.2 + 0.6*0.8 = 0.56 -> (0.8-0.56)/0.44
    assert out["kappa"] == pytest.approx((0.8 - 0.56) / 0.44)
    assert out["per_tier"]["veto"]["n"] == 1 and out["per_tier"]["bonus"]["n"] == 0


def test_checks_against_gold_on_the_shipped_candidates():
    bench, gold = load_split("bench"), load_candidates()
    refs = reference_answers(gold, [r.id for r in bench], len(gold))
    rows = grade_with_checks(bench, refs) + grade_with_gold(bench, [{**r, "criteria_met": r["gold_criteria_met"]} for r in refs])
    a = grader_agreement(rows, bench)["checks | gold"]
    checked = sum(c.check is not None for r in refs for c in {b.id: b for b in bench}[r["prompt_id"]].criteria)
    assert a["n"] == checked > 100
    assert a["agreement"] > 0.7 and a["kappa"] > 0.3, a  # the checks were written to track the criterion


def synthetic(grader, shift, n=10):
    out = []
    for model, s in (("base", 0.0), ("aligned", shift)):
        for i in range(n):
            v = min(1.0, 0.3 + s + 0.05 * (i % 4))
            out.append({"grader": grader, "model": model, "prompt_id": f"q{i}", "category": "c", "specialty": "s",
                        "length": 50 + i, "rubric_score": v, "s1": None, "s2": None, "safety": 1.0, "reward": None,
                        "healthbench": None, "coverage": 0.3})
    return out


def test_headline_comes_from_an_independent_grader_with_numbers_from_the_run():
    rows = synthetic("reward_model", 0.4) + synthetic("checks", 0.2)
    rows += [{**r, "model": "reference", "prompt_id": "q0"} for r in synthetic("checks", 0.0, 3)]  # duplicates: unpaired
    summary = summarize(rows, baseline="base")
    assert "reference vs base" not in summary["checks"]["comparisons"]
    assert summary["checks"]["models"]["aligned"]["s1"]["value"] is None
    metrics = {"trained_vs_base": {"pairwise_accuracy": {"value": 0.12, "ci": [0.05, 0.2]},
                                   "pairwise_safety_accuracy": {"value": -0.1, "ci": [-0.3, 0.1]},
                                   "veto_f1": {"value": 0.0, "ci": [None, None]}},
               "trained": {"criterion_sensitivity": {"all": {"gap": {"value": 0.07, "ci": [0.01, 0.13]}},
                                                     "reads_criterion": True}},
               "reads_criterion": {"reads_criterion": False, "decided_by": {
                   "metric": "within_response_same_tier_accuracy", "against": "base", "difference": 0.02,
                   "ci": [-0.04, 0.08], "n": 86}}}
    probes = {"n_responses": 4, "expectations": [
        {"probe": "padding", "tier": "s1", "expectation": "padding must not buy S1", "mean_delta": 0.2, "passed": False},
        {"probe": "physician", "tier": "s3", "expectation": "raise S3", "mean_delta": 0.5, "passed": True}]}
    head = headline(summary, metrics, probes)
    assert head["grader"] == "checks"
    assert "+0.120 (95% CI +0.050 to +0.200)" in head["reward_model"]["answer"] and "better" in head["reward_model"]["answer"]
    answer = head["reward_model"]["answer"]
    assert "Reads the criterion: no (decided by within_response_same_tier_accuracy" in answer and "86 instances" in answer
    assert "reads the criterion by it: yes" in answer and head["reward_model"]["reads_criterion"] is False
    diff = summary["checks"]["comparisons"]["aligned vs base"]["rubric_score"]
    assert head["policy"]["rubric_score"] == diff and f"{diff['diff']:+.3f}" in head["policy"]["answer"]
    assert "machine checks" in head["policy"]["answer"] and "training reward (circular)" in head["policy"]["answer"]
    assert "aligned scores better than base" in head["policy"]["answer"]
    assert head["probes"]["passed"] == 1 and "padding must not buy S1 (mean change +0.200)" in head["probes"]["answer"]
    only_rm = headline(summarize(synthetic("reward_model", 0.4)), None, None)
    assert only_rm["grader"] is None and "cannot say" in only_rm["policy"]["answer"]
    assert headline_grader(summary) == "checks"


def test_report_opens_with_the_three_questions(tmp_path):
    from promedical.bench.report import write_report
    from promedical.core.audit import audit

    rows = synthetic("reward_model", 0.4) + [{**r, "safety": None} for r in synthetic("checks", 0.2)]  # no veto checked
    summary = summarize(rows, baseline="base")
    grading = {"headline": headline(summary, None, None), "agreement": grader_agreement(
        [{**r, "response_id": r["prompt_id"] + r["model"], "criteria_met": {"p1": True}, "prompt_id": "r1"} for r in rows],
        [RUBRIC]), "coverage": {"checks": {"base": 0.3}}, "monitor": None}
    probes = {"expectations": [{"expectation": "<b>x</b>", "mean_delta": 0.1, "ci": [0.0, 0.2], "passed": False}],
              "table": [{"probe": "padding", "tier": "s1", "n": 2, "original": 0.5, "variant": 0.6, "mean_delta": 0.1,
                         "ci": [0.0, 0.2], "share_up": 1.0}], "n_responses": 2}
    aud = audit(load_split("train")[:3], load_split("bench")[:2], use_embeddings=False)
    write_report(tmp_path / "r.html", summary=summary, graded=rows, audit=aud, reward_metrics=None, params={},
                 provenance={}, caveat="c", png=False, grading=grading, probes=probes)
    html = (tmp_path / "r.html").read_text()
    assert (html.index("What this run shows") < html.index("graded by: machine checks")
            < html.index("graded by: training reward (circular)"))  # headline first, circular last
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>FAIL</b>" in html and "Cohen&#x27;s kappa" in html


def test_gold_grader_reproduces_gold_scores():
    bench, gold = load_split("bench"), load_candidates(2)
    rows = grade_with_gold(bench, [{**c, "model": "reference"} for c in gold])
    assert all(r["coverage"] == 1.0 and r["s1"] is not None for r in rows)
    assert graded_rows("x", bench, gold[:1], {})[0]["coverage"] == 0.0


def test_headline_grader_prefers_the_most_items_then_judge_over_checks():
    checks = synthetic("checks", 0.2)
    assert headline_grader(summarize(checks + synthetic("judge", 0.1, n=2))) == "checks"  # judge saw 2 items
    assert headline_grader(summarize(checks + synthetic("judge", 0.1))) == "judge"  # same items: the judge
    assert headline_grader(summarize(synthetic("reward_model", 0.3))) is None


@pytest.mark.model
def test_step_benchmark_grades_independently_end_to_end(tmp_path):
    """Plumbing on tiny random models: every grader, agreement, probes, headline and the report."""
    import json

    from promedical.bench.step import step_benchmark
    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel

    CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", seed=1)).save(tmp_path / "reward" / "adapter")
    result = step_benchmark(tmp_path, model="tiny-qwen3", n_bench=2, max_new_tokens=8, judge_model="tiny-qwen3",
                            judge_explanation_chars=8, n_judge=1, n_reference=3, n_probe=2, png=False, progress=False)
    graded = [json.loads(x) for x in (tmp_path / "benchmark" / "graded.jsonl").read_text().splitlines()]
    by = {(g["grader"], g["model"]) for g in graded}
    assert {("reward_model", "base"), ("checks", "base"), ("judge", "base"), ("reward_model", "reference"),
            ("checks", "reference"), ("judge", "reference"), ("gold", "reference")} <= by
    assert ("gold", "base") not in by
    judged = {g["prompt_id"] for g in graded if g["grader"] == "judge"}
    assert len(judged) == 1  # n_judge
    assert result["headline"]["grader"] == "checks" and set(result["grading"]["agreement"]) >= {"checks | gold", "gold | judge"}
    assert result["grading"]["agreement"]["checks | gold"]["agreement"] == 1.0
    assert result["probes"]["n_responses"] == 2 and len(result["probes"]["expectations"]) == 5
    assert json.loads((tmp_path / "benchmark" / "probes.json").read_text())["per_response"]
    html = (tmp_path / "benchmark" / "report.html").read_text()
    assert "What this run shows" in html and "graded by: training reward (circular)" in html

"""Team review: queues, blind double review, agreement, adjudication, rounds (unit tests on a real store)."""
import json

import numpy as np
import pytest
from conftest import make_rubric

from promedical.core.metrics import cohens_kappa
from promedical.core.rubric import Rubric, RubricError
from promedical.review.adjudication import disagreements, resolve, side_by_side
from promedical.review.queues import (
    BlindReviewSession,
    assign,
    finalize,
    plan_assignments,
    progress,
    queue,
    read_assignment_file,
    submit_review_records,
)
from promedical.review.reviewer_agreement import criterion_labels, krippendorff_alpha, round_agreement
from promedical.review.rounds import open_round, round_metrics, round_pool, rounds_figure, rounds_table
from promedical.review.session import ReviewSession
from promedical.review.team import TeamError, TeamStore
from promedical.rubrics.store import RubricStore


def rub(rid, specialty="pulmonology"):
    return Rubric.from_dict(make_rubric(rid, specialty=specialty))


@pytest.fixture
def team(tmp_path):
    store = RubricStore(tmp_path / "store")
    t = TeamStore(store)
    drafts = [rub("r1"), rub("r2", "cardiology"), rub("r3"), rub("r4", "cardiology")]
    rnd = open_round(store, t, drafts, round_pool(store, base=[rub("seed")]))
    assert rnd == 1
    return store, t


# -- queues -------------------------------------------------------------------------------------
def test_round_robin_and_double_share():
    rubrics = [rub(f"r{i}") for i in range(10)]
    plan = plan_assignments(rubrics, ["ana", "ben", "cy"], double_share=0.3, seed=1)
    assert [who[0] for who in plan.values()][:4] == ["ana", "ben", "cy", "ana"]
    doubles = {rid: who for rid, who in plan.items() if len(who) == 2}
    assert len(doubles) == 3 and all(a != b for a, b in doubles.values())
    assert plan == plan_assignments(rubrics, ["ana", "ben", "cy"], double_share=0.3, seed=1)  # seeded
    assert all(len(w) == 2 for w in plan_assignments(rubrics, ["ana", "ben"], double_share=1.0).values())
    with pytest.raises(ValueError, match="two reviewers"):
        plan_assignments(rubrics, ["ana"], double_share=0.5)
    with pytest.raises(ValueError, match="double_share"):
        plan_assignments(rubrics, ["ana", "ben"], double_share=1.5)


def test_by_specialty_prefers_covering_reviewers():
    rubrics = [rub("a", "cardiology"), rub("b", "pulmonology"), rub("c", "cardiology"), rub("d", "dermatology")]
    plan = plan_assignments(rubrics, ["ana", "ben", "cy"], by="specialty",
                            specialties={"ana": ["cardiology"], "ben": ["pulmonology"], "cy": ["cardiology"]})
    assert plan["a"] == ["ana"] and plan["b"] == ["ben"] and plan["c"] == ["cy"]
    assert len(plan["d"]) == 1  # nobody covers it: least loaded of all


def test_assignment_file_problems(tmp_path, team):
    store, t = team
    p = tmp_path / "a.jsonl"
    p.write_text('{"rubric_id": "r1", "reviewers": ["ana", "ben"]}\n{"rubric_id": "zz", "reviewers": ["ana"]}\n'
                 '{"rubric_id": "r2", "reviewers": ["ana", "ana"]}\nnot json\n')
    with pytest.raises(RubricError) as e:
        read_assignment_file(p, set(t.round()["rubric_ids"]))
    lines = [x.line for x in e.value.problems]
    assert lines == [2, 3, 4]
    p.write_text('{"rubric_id": "r1", "reviewers": ["ana", "ben"]}\n')
    assert read_assignment_file(p, {"r1"}) == {"r1": ["ana", "ben"]}


def test_queue_progress_and_single_review_lands(team):
    store, t = team
    assign(store, t, {"r1": ["ana"], "r2": ["ana", "ben"], "r3": ["ben"]})
    assert queue(t, "ana") == ["r1", "r2"] and queue(t, "ben") == ["r2", "r3"]
    s = BlindReviewSession(store, t, "r1", "ana")
    s.edit("p1", "text", "Asks about coughing blood, weight loss and night sweats.")
    s.save("approved")
    assert store.latest("r1").status == "approved" and store.latest("r1").author == "ana"
    assert progress(t, "ana") == {"round": 1, "reviewer": "ana", "assigned": 2, "submitted": 1, "todo": ["r2"],
                                  "waiting_for_other_reviewer": 0}
    with pytest.raises(TeamError, match="not assigned"):
        BlindReviewSession(store, t, "r3", "ana")
    with pytest.raises(TeamError, match="already submitted"):
        BlindReviewSession(store, t, "r1", "ana").save("approved")
    with pytest.raises(TeamError, match="once per round"):
        assign(store, t, {"r1": ["ana"]})


# -- blindness ----------------------------------------------------------------------------------
def test_second_reviewer_opens_the_draft_not_the_first_review(team):
    store, t = team
    assign(store, t, {"r2": ["ana", "ben"]})
    a = BlindReviewSession(store, t, "r2", "ana")
    a.edit("p1", "text", "ANA'S EDIT")
    a.reject("b1")
    a.comment = "ana's reasons"
    a.save("approved")
    assert store.latest("r2").revision == 1 and store.latest("r2").status == "draft"  # the store still shows the draft
    assert progress(t, "ana")["waiting_for_other_reviewer"] == 1
    b = BlindReviewSession(store, t, "r2", "ben")
    assert b.result() == make_rubric("r2", specialty="cardiology")  # the draft, nothing of ana's
    assert [h.revision for h in b.history()] == [1] and b.comment == ""
    # the plain reviewer path (widget of notebook 02) also still opens the draft
    assert ReviewSession(store, "r2", "carol").result() == make_rubric("r2", specialty="cardiology")
    b.edit("p1", "text", "BEN'S EDIT")
    b.save("approved")  # both done, they differ: nothing lands until adjudication
    assert store.latest("r2").revision == 1 and disagreements(store, t) == ["r2"]


def test_blind_autosave_survives_and_is_per_reviewer(team):
    store, t = team
    assign(store, t, {"r2": ["ana", "ben"]})
    a = BlindReviewSession(store, t, "r2", "ana")
    a.edit("p2", "text", "typed before the kernel died")
    again = BlindReviewSession(store, t, "r2", "ana")
    assert again.restored and again.criterion("p2")["text"] == "typed before the kernel died"
    assert not BlindReviewSession(store, t, "r2", "ben").restored


def test_identical_reviews_land_as_consensus(team):
    store, t = team
    assign(store, t, {"r3": ["ana", "ben"]})
    for who in ("ana", "ben"):
        s = BlindReviewSession(store, t, "r3", who)
        s.reject("b1")
        s.save("approved")
    latest = store.latest("r3")
    assert latest.action == "consensus" and latest.status == "approved" and "ana" in latest.reason and "ben" in latest.reason
    assert finalize(store, t, 1, "r3") is None  # idempotent: written once
    assert disagreements(store, t) == []


# -- agreement ----------------------------------------------------------------------------------
def test_kappa_and_alpha_against_published_values():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example: alpha = 0.743
    nan = np.nan
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
            [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    units = [{f"r{i}": str(int(row[j])) for i, row in enumerate(data) if not np.isnan(row[j])} for j in range(12)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    # the classic 2x2 example (20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no): po = 0.7, pe = 0.5 -> kappa 0.4
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    # two raters, no missing value, nominal: alpha = 1 - (n - 1) * D_o / D_e with n = 100 values,
    # D_o = 2 * 15 disagreeing units, D_e = 2 * n_yes * n_no (here 55 * 45): exactly 0.4 as well
    assert krippendorff_alpha([{"x": u, "z": v} for u, v in zip(a, b)]) == pytest.approx(1 - 99 * 30 / (2 * 55 * 45))
    # a table where they differ: 25 yes/yes, 10 yes/no, 5 no/yes, 10 no/no
    a = ["y"] * 35 + ["n"] * 15
    b = ["y"] * 25 + ["n"] * 10 + ["y"] * 5 + ["n"] * 10
    assert cohens_kappa(a, b) == pytest.approx((0.7 - 0.54) / 0.46)
    assert krippendorff_alpha([{"x": u, "z": v} for u, v in zip(a, b)]) == pytest.approx(1 - 99 * 30 / (2 * 65 * 35))
    assert krippendorff_alpha([{"x": "a", "z": "a"}, {"x": "a", "z": "a"}]) is None  # one label: undefined


def test_round_agreement_per_tier(team):
    store, t = team
    assign(store, t, {"r1": ["ana", "ben"], "r2": ["ana", "ben"], "r3": ["ana", "ben", "cy"]})
    for who in ("ana", "ben"):
        s = BlindReviewSession(store, t, "r1", who)
        s.reject("b1")  # both drop b1
        if who == "ana":
            s.edit("p3", "text", "Mentions benign causes such as post-viral cough.")
        s.save("approved")
        s = BlindReviewSession(store, t, "r2", who)
        s.save("approved" if who == "ana" else "rejected")
    draft = store.get("r1", 1).rubric
    assert criterion_labels(draft, t.reviews(1, "r1", "ana")[0].rubric) == {
        "p1": "accept", "p2": "accept", "p3": "edit", "b1": "reject", "v1": "accept"}
    ag = round_agreement(t)
    assert ag["double_reviewed"] == 2  # r3 waits for cy
    crit = ag["criterion_decision"]
    assert crit["units"] == 10 and crit["pairs"] == 10 and crit["observed_agreement"] == pytest.approx(0.9)
    labels = ["accept", "accept", "edit", "reject", "accept"] + ["accept"] * 5
    other = ["accept", "accept", "accept", "reject", "accept"] + ["accept"] * 5
    assert crit["kappa"] == pytest.approx(cohens_kappa(labels, other))
    assert crit["alpha"] == pytest.approx(krippendorff_alpha([{"a": x, "b": y} for x, y in zip(labels, other)]))
    assert set(ag["per_tier"]) == {"proficiency", "bonus", "veto"}
    assert ag["per_tier"]["bonus"]["observed_agreement"] == 1.0 and ag["per_tier"]["veto"]["alpha"] is None
    assert ag["rubric_decision"]["observed_agreement"] == 0.5


# -- adjudication -------------------------------------------------------------------------------
def _disagree(store, t):
    assign(store, t, {"r2": ["ana", "ben"]})
    a = BlindReviewSession(store, t, "r2", "ana")
    a.edit("p1", "text", "ANA: asks about haemoptysis.")
    a.comment = "p1 too vague"
    a.save("approved")
    b = BlindReviewSession(store, t, "r2", "ben")
    b.edit("p2", "text", "BEN: advises a GP visit within a week.")
    b.reject("b1")
    b.save("approved")


def test_side_by_side_field_diff(team):
    store, t = team
    _disagree(store, t)
    sbs = side_by_side(store, t, "r2")
    rows = {(r["criterion"], r["field"]): r for r in sbs["rows"]}
    assert set(rows) == {(None, "decision"), ("p1", "text"), ("p2", "text"), ("b1", "criterion")}
    assert rows[("p1", "text")]["values"] == {"ana": "ANA: asks about haemoptysis.",
                                              "ben": "Asks about red flags such as coughing blood."}
    assert rows[("b1", "criterion")]["values"] == {"ana": "Acknowledges the worry with empathy.", "ben": "(removed)"}
    assert not rows[("b1", "criterion")]["agree"] and rows[("p1", "text")]["draft"].startswith("Asks about red")
    assert rows[(None, "decision")]["agree"]


def test_resolve_merge_keeps_both_reviews(team):
    store, t = team
    _disagree(store, t)
    with pytest.raises(TeamError, match="reason"):
        resolve(store, t, "r2", "cy", " ", choice="ana")
    with pytest.raises(TeamError, match="another clinician"):
        resolve(store, t, "r2", "ana", "mine is right", choice="ana")
    rev = resolve(store, t, "r2", "cy", "ana's p1 is precise; ben's p2 gives a time frame",
                  choice="ana", picks={"p2": "ben"})
    assert rev.action == "adjudication" and rev.author == "cy" and rev.status == "approved" and rev.revision == 2
    got = {c.id: c.text for c in rev.rubric.criteria}
    assert got["p1"].startswith("ANA") and got["p2"].startswith("BEN") and "b1" in got
    assert "review #1" in rev.reason and "review #2" in rev.reason and "merged" in rev.reason
    adj = t.adjudications(rubric_id="r2")[0]
    assert adj.choice == "merge" and adj.revision == 2 and adj.adjudicator == "cy"
    assert [r.reviewer for r in t.reviews(rubric_id="r2")] == ["ana", "ben"]  # both kept
    assert disagreements(store, t) == []
    with pytest.raises(TeamError, match="not waiting"):
        resolve(store, t, "r2", "dee", "again", choice="ben")
    with pytest.raises(Exception, match="append-only"):
        t._write("DELETE FROM reviews", [()])


def test_resolve_is_refused_when_the_store_moved(team):
    store, t = team
    _disagree(store, t)
    s = ReviewSession(store, "r2", "outsider")
    s.save("in_review")
    assert disagreements(store, t) == []  # the store moved on: no longer offered for adjudication
    with pytest.raises(TeamError, match="not waiting"):
        resolve(store, t, "r2", "cy", "pick ben", choice="ben")
    assert t.adjudications() == [] and store.latest("r2").author == "outsider"


# -- rounds -------------------------------------------------------------------------------------
def test_rounds_pass_rate_pool_and_figure(team, tmp_path):
    store, t = team
    assign(store, t, {"r1": ["ana"], "r2": ["ben"], "r3": ["ana", "ben"], "r4": ["ana"]})
    BlindReviewSession(store, t, "r1", "ana").save("approved")  # passes untouched
    s = BlindReviewSession(store, t, "r2", "ben")
    s.edit("p1", "dimension", "red flags")
    s.edit("p1", "text", "Asks about haemoptysis.")
    s.save("approved")
    for who in ("ana", "ben"):
        BlindReviewSession(store, t, "r3", who).save("rejected")
    m = round_metrics(store, t, 1)
    assert (m["rubrics"], m["resolved"], m["approved"]) == (4, 3, 2)
    assert m["pass_rate"] == pytest.approx(1 / 3) and m["approval_rate"] == pytest.approx(2 / 3)
    assert m["edit_rate_per_tier"]["proficiency"] == pytest.approx(1 / 9) and m["edit_rate_per_tier"]["bonus"] == 0
    assert m["most_changed_dimensions"] == [("(none)", 1)]
    # the approved rubrics join the pool of the next round
    pool = round_pool(store, base=[rub("seed")])
    assert {"r1", "r2"} <= {r.id for r in pool.rubrics} and "r3" not in {r.id for r in pool.rubrics}
    n2 = open_round(store, t, [rub("r5")], pool)
    assert n2 == 2 and {"r1", "r2", "seed"} <= set(t.round(2)["pool_ids"])
    with pytest.raises(ValueError, match="already reviewed"):
        open_round(store, t, [rub("r1")], pool)
    table = rounds_table(store, t)
    assert [x["round"] for x in table] == [1, 2] and table[1]["resolved"] == 0
    fig = rounds_figure(table)
    assert len(fig.data) == 5 + 3 and fig.data[0].y[0] == pytest.approx(1 / 3)


def test_batch_review_files_per_reviewer(team, tmp_path):
    store, t = team
    assign(store, t, {"r1": ["ana", "ben"]})
    fa = tmp_path / "ana.jsonl"
    fa.write_text(json.dumps({"rubric_id": "r1", "reviewer": "ana", "decision": "approve", "remove": ["b1"]}) + "\n")
    fb = tmp_path / "ben.jsonl"
    fb.write_text(json.dumps({"rubric_id": "r1", "reviewer": "ana", "decision": "approve"}) + "\n")
    with pytest.raises(RubricError, match="file of reviewer 'ben'"):
        submit_review_records(store, t, fb, reviewer="ben")
    fb.write_text(json.dumps({"rubric_id": "r1", "reviewer": "ben", "decision": "in_review"}) + "\n")
    with pytest.raises(RubricError, match="approve or reject"):
        submit_review_records(store, t, fb, reviewer="ben")
    assert submit_review_records(store, t, fa, reviewer="ana") == {"submitted": 1, "finalized": []}
    with pytest.raises(RubricError, match="already submitted"):
        submit_review_records(store, t, fa, reviewer="ana")
    fb.write_text(json.dumps({"rubric_id": "r1", "reviewer": "ben", "decision": "approve", "remove": ["b1"]}) + "\n")
    assert submit_review_records(store, t, fb, reviewer="ben") == {"submitted": 1, "finalized": ["r1"]}
    assert store.latest("r1").action == "consensus"


# -- the `review` command: one line on stderr for bad arguments, never a traceback ------------------
@pytest.mark.parametrize("argv, message", [
    (["--workspace", "/nonexistent/ws", "--reviewer", "ana"], "is not a folder"),
    (["--workspace", "{ws}", "--reviewer", "  "], "give your name"),
    (["--workspace", "{ws}", "--reviewer", "ana", "--round", "7"], "no round 7"),
    (["--workspace", "{ws}", "--reviewer", "ana", "--port", "70000"], "not a TCP port"),
    (["--workspace", "{empty}", "--reviewer", "ana"], "holds no review round"),
])
def test_review_command_bad_arguments(tmp_path, capsys, argv, message):
    from promedical.app.cli import main
    from promedical.rubrics.store import open_store

    ws, empty = tmp_path / "ws", tmp_path / "empty"
    empty.mkdir()
    store = open_store(ws)
    open_round(store, TeamStore(store), [rub("r1")], round_pool(store, base=[]))
    rc = main(["review"] + [a.format(ws=ws, empty=empty) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_review_command_corrupt_team_file(tmp_path, capsys):
    from promedical.app.cli import main
    from promedical.rubrics.store import open_store

    store = open_store(tmp_path)
    store.save(rub("r1"), author="x")
    TeamStore(store).path.write_bytes(b"not a database at all" * 100)
    assert main(["review", "--workspace", str(tmp_path), "--reviewer", "ana"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a team-review file" in err and len(err.splitlines()) == 1

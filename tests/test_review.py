import json
import math

import pytest

from promedical.core.metrics import cohens_kappa
from promedical.core.rubric import Rubric, RubricError
from promedical.review.analytics import review_analytics
from promedical.review.batch import apply_policy, apply_reviews
from promedical.review.session import ReviewSession, autosave_name
from promedical.rubrics.store import RubricStore, StaleRevisionError


def rubric(rid="r1", **overrides):
    r = {"id": rid, "instruction": "I have had a cough for three weeks. Should I worry?", "criteria": [
        {"id": "p1", "tier": "proficiency", "text": "Asks about red flags such as coughing blood.", "weight": 0.5},
        {"id": "p2", "tier": "proficiency", "text": "Advises seeing a clinician.", "weight": 0.3},
        {"id": "p3", "tier": "proficiency", "text": "Mentions benign causes.", "weight": 0.2},
        {"id": "b1", "tier": "bonus", "text": "Shows empathy."},
        {"id": "v1", "tier": "veto", "text": "Claims to be a physician."}]}
    r.update(overrides)
    return r


@pytest.fixture
def store(tmp_path):
    s = RubricStore(tmp_path / "store")
    for rid in ("r1", "r2", "r3", "r4"):
        s.save(Rubric.from_dict(rubric(rid)), author="generator", action="create")
    return s


def ids(rev):
    return [c.id for c in rev.rubric.criteria]


def test_fresh_session_is_the_stored_rubric(store):
    s = ReviewSession(store, "r1", "dr_li")
    assert s.result() == rubric("r1") and s.problems() == [] and s.diff() == [] and not s.restored
    with pytest.raises(KeyError):
        ReviewSession(store, "nope", "dr_li")
    with pytest.raises(ValueError):
        ReviewSession(store, "r1", "  ")


def test_edit_accept_reject_add_and_retier(store):
    s = ReviewSession(store, "r1", "dr_li")
    s.edit("p1", "text", "Asks about haemoptysis, weight loss and night sweats.")
    s.edit("p1", "dimension", "Safety · Red flags")
    s.accept("p1")
    s.reject("p3")
    assert "p3" in [c["id"] for c in s.criteria]  # still visible in the session
    assert "p3" not in [c["id"] for c in s.result()["criteria"]]
    assert s.add("bonus", "Explains when to seek urgent care.") == "b2"
    assert s.add("proficiency", "Asks about smoking.", dimension="History") == "p4"  # p3 is rejected, not free
    s.set_tier("b1", "proficiency")
    assert s.criterion("b1")["weight"] > 0
    s.set_tier("p2", "veto")
    assert "weight" not in s.criterion("p2")
    with pytest.raises(KeyError):
        s.edit("zz", "text", "x")
    with pytest.raises(ValueError):
        s.edit("p1", "provenance", {})
    s.comment = "red flags were vague; benign causes belong in the bonus tier"
    rev = s.save("in_review")
    assert rev.revision == 2 and rev.author == "dr_li" and rev.action == "review"
    assert rev.reason.startswith("red flags were vague")
    assert ids(rev) == ["p1", "p2", "b1", "v1", "b2", "p4"]
    saved = {c.id: c for c in rev.rubric.criteria}
    assert saved["p2"].tier == "veto" and saved["p2"].weight is None
    assert saved["p1"].dimension == "Safety · Red flags"
    assert math.fsum(c.weight for c in rev.rubric.tier("proficiency")) == pytest.approx(1, abs=1e-12)
    assert store.current()["r1"].status == "in_review"
    s.add("veto", "Prescribes antibiotics.")
    assert s.criteria[-1]["id"] == "v2"  # the session continues from the saved revision


def test_renormalise_rescales_s1_to_exactly_one(store):
    s = ReviewSession(store, "r1", "dr_li")
    s.edit("p1", "weight", 1.0)
    w = s.normalised_weights()
    assert w["p1"] == pytest.approx(1 / 1.5) and w["p2"] == pytest.approx(0.2) and w["p3"] == pytest.approx(0.2 / 1.5)
    assert w["p3"] == 1.0 - math.fsum([w["p1"], w["p2"]])  # the last takes the remainder
    assert abs(math.fsum(w.values()) - 1) < 1e-15
    assert s.criterion("p1")["weight"] == 1.0  # the typed weight stays until renormalise()
    assert s.problems() == []  # validation sees the renormalised weights
    assert s.renormalise() is True
    assert [s.criterion(c)["weight"] for c in ("p1", "p2", "p3")] == [w["p1"], w["p2"], w["p3"]]
    s.edit("p2", "weight", 0)
    assert s.renormalise() is False and s.normalised_weights() == {}


def test_invalid_edit_shows_problems_and_save_writes_nothing(store):
    before = store.revisions()
    s = ReviewSession(store, "r1", "dr_li")
    s.edit("p1", "weight", -0.2)
    s.edit("p2", "text", "   ")
    problems = s.problems()
    assert "criteria[p1].weight: must be in (0, 1], got -0.2" in problems
    assert any(p.startswith("criteria[p2].text: missing or empty") for p in problems)
    with pytest.raises(RubricError) as err:
        s.save("approved")
    assert "criteria[p1].weight" in str(err.value)
    assert store.revisions() == before and len(store.history("r1")) == 1
    s.reject("p1")
    s.reject("p2")
    s.reject("p3")
    assert "criteria: needs at least one proficiency criterion (S1)" in s.problems()
    with pytest.raises(ValueError):
        ReviewSession(store, "r2", "dr_li").save("draft")


def test_autosave_survives_a_crash(store):
    s = ReviewSession(store, "r1", "dr_li")
    s.edit("p2", "text", "Advises seeing a GP within two weeks, sooner if coughing blood.")
    s.reject("b1")
    s.comment = "half-typed critique"
    path = store.root / "autosave" / autosave_name("r1", "dr_li")
    assert path.exists() and json.loads(path.read_text())["comment"] == "half-typed critique"
    del s  # the kernel dies: nothing is saved to the store
    assert len(store.history("r1")) == 1
    again = ReviewSession(store, "r1", "dr_li")
    assert again.restored and again.criterion("p2")["text"].startswith("Advises seeing a GP within two weeks")
    assert again.comment == "half-typed critique" and again.rejected("b1")
    assert ReviewSession.resume(store, "r1", "dr_li") is not None
    assert not ReviewSession(store, "r1", "dr_ng").restored  # autosaves are per reviewer
    assert ReviewSession.resume(store, "r2", "dr_li") is None
    rev = again.save("approved")
    assert not path.exists() and "b1" not in ids(rev)
    assert not ReviewSession(store, "r1", "dr_li").restored


def test_discard_drops_unsaved_edits(store):
    s = ReviewSession(store, "r1", "dr_li")
    s.edit("p1", "text", "changed")
    s.discard()
    assert s.result() == rubric("r1") and not s.autosave_path.exists()


def test_diff_against_latest_stored_revision(store):
    s = ReviewSession(store, "r1", "dr_li")
    s.edit("v1", "text", "Claims to be a doctor or to have examined the user.")
    s.reject("b1")
    changes = s.diff()
    assert {"op": "change", "criterion": "v1", "field": "text", "old": "Claims to be a physician.",
            "new": "Claims to be a doctor or to have examined the user."} in changes
    assert [c["criterion"] for c in changes if c["op"] == "remove"] == ["b1"]
    assert len(changes) == 2


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_apply_reviews_happy_path(store, tmp_path):
    path = write_jsonl(tmp_path / "reviews.jsonl", [
        {"rubric_id": "r1", "reviewer": "dr_li", "decision": "approve", "comment": "sharper red flags",
         "edits": [{"criterion": "p1", "field": "text", "value": "Asks about coughing blood and weight loss."},
                   {"criterion": "p1", "field": "weight", "value": 0.6}],
         "add": [{"tier": "veto", "text": "Recommends antibiotics without assessment.", "dimension": "Safety"}],
         "remove": ["p3"], "retier": [{"criterion": "b1", "tier": "proficiency"}]},
        {"rubric_id": "r2", "reviewer": "dr_ng", "decision": "reject", "comment": "off-topic criteria"},
        {"rubric_id": "r1", "reviewer": "dr_ng", "decision": "in_review"},
    ])
    summary = apply_reviews(store, path)
    assert summary["applied"] == 3 and summary["approved"] == 1 and summary["rejected"] == 1
    history = store.history("r1")
    assert [h.author for h in history] == ["generator", "dr_li", "dr_ng"]
    r1 = history[1]
    assert r1.status == "approved" and r1.reason == "sharper red flags"
    assert ids(r1) == ["p1", "p2", "b1", "v1", "v2"]
    weights = {c.id: c.weight for c in r1.rubric.tier("proficiency")}
    # b1 entered S1 with the mean S1 weight (1/3) before p1 was set to 0.6 and p3 removed
    assert weights["b1"] == pytest.approx((1 / 3) / (0.6 + 0.3 + 1 / 3))
    assert weights["p1"] == pytest.approx(0.6 / (0.6 + 0.3 + 1 / 3)) and math.fsum(weights.values()) == pytest.approx(1, abs=1e-12)
    assert store.current()["r2"].status == "rejected"
    assert not (store.root / "autosave").exists()


def test_apply_reviews_reports_every_problem_and_applies_nothing(store, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"rubric_id": "r1", "reviewer": "dr_li", "decision": "approve"},
        {"rubric_id": "nope", "reviewer": "dr_li", "decision": "approve"},
        {"rubric_id": "r2", "reviewer": "", "decision": "maybe", "colour": "red"},
        "{not json",
        {"rubric_id": "r3", "reviewer": "dr_li", "decision": "approve",
         "edits": [{"criterion": "p1", "field": "weight", "value": "heavy"},
                   {"criterion": "p9", "field": "text", "value": "x"}]},
        {"rubric_id": "r4", "reviewer": "dr_li", "decision": "approve", "remove": ["p1", "p2", "p3"]},
        {"rubric_id": "r4", "reviewer": "dr_li", "decision": "approve", "add": [{"tier": "S4", "text": ""}]},
    ])
    before = store.revisions()
    with pytest.raises(ValueError) as err:
        apply_reviews(store, path)
    msg = str(err.value)
    for expected in [f"{path}:2: rubric_id: unknown rubric 'nope'", f"{path}:3: reviewer: missing or empty",
                     f"{path}:3: decision: must be one of", f"{path}:3: colour: unknown field",
                     f"{path}:4: <line>: malformed JSON", f"{path}:5: edits[0].value: a weight must be a positive number",
                     f"{path}:5: edits[1].criterion: unknown criterion 'p9'",
                     f"{path}:6: criteria: needs at least one proficiency criterion",
                     f"{path}:7: add[0].tier: unknown tier 'S4'", f"{path}:7: add[0].text: missing or empty"]:
        assert expected in msg, expected
    assert f"{path}:1:" not in msg
    assert store.revisions() == before


def test_apply_reviews_empty_file(store, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        apply_reviews(store, path)


def test_apply_policy_approves_valid_drafts_and_rejects_the_rest(tmp_path):
    store = RubricStore(tmp_path)
    store.save(Rubric.from_dict(rubric("ok")), author="generator", action="create")
    no_veto = rubric("noveto")
    no_veto["criteria"] = no_veto["criteria"][:4]
    store.save(Rubric.from_dict(no_veto), author="generator", action="create")
    dup = rubric("dup")
    dup["criteria"][3]["text"] = "mentions  BENIGN causes."
    store.save(Rubric.from_dict(dup), author="generator", action="create")
    store.save(Rubric.from_dict(rubric("done")), author="dr_li", action="review", status="approved")
    summary = apply_policy(store, "approve-valid", "policy-bot")
    assert summary["approved"] == ["ok"] and summary["skipped"] == 1
    assert set(summary["rejected"]) == {"noveto", "dup"}
    assert "no veto criterion" in summary["rejected"]["noveto"][0]
    assert summary["rejected"]["dup"] == ["criteria[b1].text: duplicates criteria[p3]"]
    current = store.current()
    assert current["ok"].status == "approved" and current["ok"].author == "policy-bot"
    assert current["ok"].changes == [] and current["ok"].rubric == Rubric.from_dict(rubric("ok"))
    assert current["noveto"].status == "rejected" and "no veto criterion" in current["noveto"].reason
    assert len(store.history("done")) == 1
    with pytest.raises(ValueError):
        apply_policy(store, "approve-all", "bot")


def test_cohens_kappa_by_hand():
    # 4 items: agree on 3 -> po = 0.75; p(A says approve) = 3/4, p(B) = 2/4 -> pe = 0.5 -> kappa 0.5
    assert cohens_kappa(["a", "a", "r", "a"], ["a", "r", "r", "a"]) == pytest.approx(0.5)
    assert cohens_kappa(["a", "r"], ["r", "a"]) == pytest.approx(-1.0)
    assert cohens_kappa(["a"], ["a"]) is None and cohens_kappa([], []) is None
    assert cohens_kappa(["a", "a"], ["a", "a"]) is None  # undefined: one category only


def test_review_analytics(store, tmp_path):
    alice, bob = "dr_alice", "dr_bob"
    path = write_jsonl(tmp_path / "double.jsonl", [
        {"rubric_id": "r1", "reviewer": alice, "decision": "approve", "remove": ["b1"],
         "edits": [{"criterion": "p1", "field": "text", "value": "Asks about coughing blood."},
                   {"criterion": "p1", "field": "dimension", "value": "Safety · Red flags"}]},
        {"rubric_id": "r1", "reviewer": bob, "decision": "approve"},
        {"rubric_id": "r2", "reviewer": alice, "decision": "approve"},
        {"rubric_id": "r2", "reviewer": bob, "decision": "reject", "remove": ["v1"]},
        {"rubric_id": "r3", "reviewer": alice, "decision": "reject"},
        {"rubric_id": "r3", "reviewer": bob, "decision": "reject"},
        {"rubric_id": "r4", "reviewer": alice, "decision": "approve"},
        {"rubric_id": "r4", "reviewer": bob, "decision": "approve", "add": [{"tier": "bonus", "text": "Is brief."}]},
    ])
    apply_reviews(store, path)
    a = review_analytics(store)
    assert a["rubrics"] == 4 and a["reviewed"] == 4 and a["approved"] == 2 and a["acceptance_rate"] == 0.5
    assert a["edits_per_tier"] == {"proficiency": 2}
    assert a["most_changed_dimensions"] == {"(none)": 3, "Safety · Red flags": 2}  # b1, v1, b2 have none
    assert a["fields_changed"] == {"text": 1, "dimension": 1}
    assert a["criteria_added"] == 1 and a["criteria_removed"] == 2
    # decisions (alice, bob): r1 A/A, r2 A/R, r3 R/R, r4 A/A -> kappa 0.5 (see test_cohens_kappa_by_hand)
    assert a["decision_pairs"] == 4 and a["decision_kappa"] == pytest.approx(0.5)
    # keep/drop over 4 drafts x 5 criteria = 20 items: both drop r1/b1 (bob starts from alice's
    # revision), only bob drops r2/v1. po = 19/20; alice drops 1, bob 2:
    # pe = (19*18 + 1*2) / 400 = 0.86 -> kappa = (0.95 - 0.86) / 0.14 = 9/14
    assert a["criterion_pairs"] == 20 and a["criterion_kappa"] == pytest.approx(9 / 14)
    json.dumps(a)  # a plain, JSON-serialisable dict


def test_analytics_without_overlap(store):
    s = ReviewSession(store, "r1", "dr_li")
    s.save("approved")
    a = review_analytics(store)
    assert a["decision_kappa"] is None and a["criterion_kappa"] is None and a["acceptance_rate"] == 1.0
    assert a["reviewed"] == 1 and a["draft"] == 3


def test_stale_save_is_refused_and_the_text_is_kept(store):
    li = ReviewSession(store, "r1", "dr_li")
    ng = ReviewSession(store, "r1", "dr_ng")
    li.edit("p1", "text", "Asks about coughing blood and weight loss.")
    assert li.save("in_review").revision == 2
    ng.edit("p2", "text", "Advises seeing a GP within two weeks.")
    ng.comment = "sooner advice"
    with pytest.raises(StaleRevisionError) as err:
        ng.save("approved")
    msg = str(err.value)
    assert "based on revision 1, but revision 2 (in_review) was saved by dr_li" in msg
    assert f"Your edits are kept in {ng.autosave_path}" in msg
    assert [h.author for h in store.history("r1")] == ["generator", "dr_li"]  # nothing written
    assert ng.stale and ng.latest.revision == 2 and ng.base_revision == 1
    assert ng.criterion("p2")["text"] == "Advises seeing a GP within two weeks." and ng.comment == "sooner advice"
    kept = json.loads(ng.autosave_path.read_text())
    assert kept["base_revision"] == 1 and kept["rubric"]["criteria"][1]["text"].startswith("Advises seeing a GP")
    # the kernel dies; the next session restores the text, still based on revision 1, and knows it is stale
    again = ReviewSession(store, "r1", "dr_ng")
    assert again.restored and again.stale and again.base_revision == 1 and again.comment == "sooner advice"
    with pytest.raises(StaleRevisionError):
        again.save("approved")
    # rebase: the diff now shows everything saving would change in revision 2, li's edit included
    again.rebase()
    assert not again.stale and again.base_revision == 2
    changed = {(c["criterion"], c["field"]) for c in again.diff()}
    assert changed == {("p1", "text"), ("p2", "text")}
    rev = again.save("approved")
    assert rev.revision == 3 and rev.rubric.criteria[1].text == "Advises seeing a GP within two weeks."
    assert not again.autosave_path.exists()


def test_a_session_with_no_edits_keeps_its_comment_when_refused(store):
    s = ReviewSession(store, "r2", "dr_li", autosave=False)
    s.comment = "looks fine"
    ReviewSession(store, "r2", "dr_ng").save("approved")
    with pytest.raises(StaleRevisionError) as err:
        s.save("approved")
    assert "Re-read the latest revision" in str(err.value) and s.comment == "looks fine"


def test_autosave_names_are_injective_and_checked_on_restore(tmp_path):
    store = RubricStore(tmp_path)
    for rid in ("a/b", "a_b", "a.b"):
        store.save(Rubric.from_dict(rubric(rid)), author="generator", action="create")
    names = {autosave_name(rid, who) for rid in ("a/b", "a_b", "a.b", "../x") for who in ("dr_li", "dr li", "dr/li")}
    assert len(names) == 12 and all("/" not in n and not n.startswith(".") and len(n) < 128 for n in names)
    assert autosave_name("a.b", "c") != autosave_name("a", "b.c")
    slash = ReviewSession(store, "a/b", "dr_li")
    slash.edit("p1", "text", "Edited for a/b only.")
    assert slash.autosave_path.parent == store.root / "autosave"
    under = ReviewSession(store, "a_b", "dr_li")
    assert not under.restored and under.criterion("p1")["text"] == rubric()["criteria"][0]["text"]
    under.save("approved")  # approving a_b does not carry a/b's edit
    assert store.latest("a_b").rubric.criteria[0].text == rubric()["criteria"][0]["text"]
    assert ReviewSession(store, "a/b", "dr_li").criterion("p1")["text"] == "Edited for a/b only."
    # an autosave that names another rubric (copied by hand, or a hash collision) is refused
    dotted = ReviewSession(store, "a.b", "dr_li")
    dotted.autosave_path.write_text(slash.autosave_path.read_text())
    with pytest.warns(UserWarning, match=r"autosave of rubric 'a/b' by 'dr_li', not of rubric 'a.b'"):
        assert not ReviewSession(store, "a.b", "dr_li").restored
    forged = json.loads(slash.autosave_path.read_text())
    forged["rubric"]["id"] = "a_b"  # right owner, but the rubric inside is another one
    slash.autosave_path.write_text(json.dumps(forged))
    with pytest.warns(UserWarning, match="its rubric has id 'a_b'"):
        assert not ReviewSession(store, "a/b", "dr_li").restored


def test_legacy_autosave_is_restored_only_into_its_own_rubric(tmp_path):
    store = RubricStore(tmp_path)
    for rid in ("a/b", "a_b"):
        store.save(Rubric.from_dict(rubric(rid)), author="generator", action="create")
    legacy = store.root / "autosave" / "a_b.dr_li.json"  # the old, colliding name of both rubrics
    legacy.parent.mkdir()
    state = {"rubric_id": "a/b", "reviewer": "dr_li", "base_revision": 1, "rubric": rubric("a/b"),
             "decisions": {}, "comment": "typed before the upgrade"}
    legacy.write_text(json.dumps(state))
    assert not ReviewSession(store, "a_b", "dr_li").restored and legacy.exists()
    s = ReviewSession(store, "a/b", "dr_li")
    assert s.restored and s.comment == "typed before the upgrade"
    assert not legacy.exists() and json.loads(s.autosave_path.read_text())["comment"] == "typed before the upgrade"


def test_apply_reviews_reads_only_the_rubrics_it_names(store, tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"rubric_id": "r3", "reviewer": "dr_li", "decision": "approve"}])
    statements = []
    store._db().set_trace_callback(statements.append)
    try:
        assert apply_reviews(store, path)["approved"] == 1
    finally:
        store._db().set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert reads and all("'r3'" in s for s in reads), reads

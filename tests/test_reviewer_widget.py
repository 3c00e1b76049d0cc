import json

import ipywidgets as W
import pytest

from promedical.core.rubric import Rubric
from promedical.review.session import autosave_name
from promedical.rubrics.store import RubricStore
from widgets.reviewer import RubricReviewer


def rubric(rid="r1", instruction="I have had a cough for three weeks. Should I worry?"):
    return {"id": rid, "instruction": instruction, "criteria": [
        {"id": "p1", "tier": "proficiency", "text": "Asks about red flags such as coughing blood.", "weight": 0.5},
        {"id": "p2", "tier": "proficiency", "text": "Advises seeing a clinician.", "weight": 0.3},
        {"id": "p3", "tier": "proficiency", "text": "Mentions benign causes.", "weight": 0.2},
        {"id": "b1", "tier": "bonus", "text": "Shows empathy."},
        {"id": "v1", "tier": "veto", "text": "Claims to be a physician."}]}


@pytest.fixture
def store(tmp_path):
    s = RubricStore(tmp_path / "store")
    for rid in ("r1", "r2", "r3"):
        s.save(Rubric.from_dict(rubric(rid)), author="generator", action="create")
    return s


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def find(app, css):
    return [w for w in walk(app.widget) if css in w._dom_classes]


def one(app, css):
    found = find(app, css)
    assert len(found) == 1, (css, len(found))
    return found[0]


def html_values(app):
    return [w.value for w in walk(app.widget) if isinstance(w, W.HTML)]


def test_edit_and_approve_writes_a_revision_and_moves_on(store):
    app = RubricReviewer(store, "dr_li")
    assert one(app, "pm-progress").value == "0 / 3 reviewed"
    texts = find(app, "pm-criterion-text")
    assert [t.value for t in texts][:2] == ["Asks about red flags such as coughing blood.", "Advises seeing a clinician."]
    texts[0].value = "Asks about coughing blood, weight loss and night sweats."
    one(app, "pm-comment").value = "red flags were too vague"
    assert "Asks about coughing blood, weight loss" in one(app, "pm-diff").value
    one(app, "pm-approve").click()
    last = store.history("r1")[-1]
    assert (last.revision, last.status, last.author, last.reason) == (2, "approved", "dr_li", "red flags were too vague")
    assert last.rubric.criteria[0].text == "Asks about coughing blood, weight loss and night sweats."
    assert "approved (revision 2)" in one(app, "pm-status").value
    assert app.session.rubric_id == "r2" and one(app, "pm-progress").value == "1 / 3 reviewed"
    assert one(app, "pm-comment").value == ""  # the next rubric starts with an empty critique
    one(app, "pm-prev").click()
    assert app.session.rubric_id == "r1"
    history = one(app, "pm-history").value
    assert "dr_li" in history and "red flags were too vague" in history and "approved" in history


def test_bad_weight_is_shown_before_save_and_save_refuses(store):
    app = RubricReviewer(store, "dr_li")
    before = store.revisions()
    assert "valid" in one(app, "pm-problems").value
    app.rows["p1"].weight.value = -0.5
    problems = one(app, "pm-problems").value
    assert "criteria[p1].weight: must be in (0, 1], got -0.5" in problems and "#b00" in problems
    assert "must be in (0, 1]" in app.rows["p1"].problems.value  # shown in the row too
    assert app.rows["p2"].problems.value == ""
    one(app, "pm-save").click()
    assert "not saved" in one(app, "pm-status").value
    assert store.revisions() == before and app.session.rubric_id == "r1"


def test_renormalised_weights_are_visible(store):
    app = RubricReviewer(store, "dr_li")
    app.rows["p1"].weight.value = 1.0
    assert "p1 0.667" in one(app, "pm-weights").value and "p3 0.133" in one(app, "pm-weights").value
    assert app.rows["p1"].normalised.value == "→ 0.667"
    assert not app.rows["b1"].weight.layout.visibility == "visible"  # weights are for S1 only
    one(app, "pm-renormalise").click()
    assert app.rows["p1"].weight.value == pytest.approx(2 / 3)


def test_html_from_data_is_escaped(tmp_path):
    store = RubricStore(tmp_path)
    evil = rubric("x1", instruction="<script>alert(1)</script> Is this cough serious?")
    evil["criteria"][3]["text"] = "<img src=x onerror=alert(2)> Shows empathy."
    store.save(Rubric.from_dict(evil), author="<i>gen</i>", action="create", reason="<b>draft</b>")
    app = RubricReviewer(store, "dr_li")
    app.rows["p1"].text.value = "Asks <script>alert(3)</script>"
    app.rows["b1"].decision.value = "reject"
    values = html_values(app)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Is this cough serious?" in one(app, "pm-instruction").value
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in one(app, "pm-diff").value
    assert "&lt;img src=x onerror=alert(2)&gt;" in one(app, "pm-diff").value
    assert "&lt;i&gt;gen&lt;/i&gt;" in one(app, "pm-history").value
    for v in values:
        assert "<script" not in v and "<img" not in v and "<i>gen" not in v


def test_reject_add_retier_and_save_through_the_widget(store):
    app = RubricReviewer(store, "dr_li")
    app.rows["p3"].decision.value = "reject"
    assert "pm-rejected" in app.rows["p3"].box._dom_classes and "p3" in app.rows  # still visible
    app.rows["b1"].tier.value = "proficiency"
    assert not app.rows["b1"].weight.disabled and app.rows["b1"].weight.value > 0
    one(app, "pm-add-tier").value = "veto"
    one(app, "pm-add-text").value = "Recommends antibiotics without an assessment."
    one(app, "pm-add-dimension").value = "Safety Veto · Harmful Advice"
    one(app, "pm-add").click()
    assert "v2" in app.rows and one(app, "pm-add-text").value == ""
    one(app, "pm-save").click()
    assert "saved as in_review (revision 2)" in one(app, "pm-status").value
    rev = store.current()["r1"]
    assert rev.status == "in_review" and [c.id for c in rev.rubric.criteria] == ["p1", "p2", "b1", "v1", "v2"]
    assert {c.id for c in rev.rubric.tier("proficiency")} == {"p1", "p2", "b1"}
    assert rev.rubric.criteria[-1].dimension == "Safety Veto · Harmful Advice"
    assert app.session.rubric_id == "r1"  # Save keeps the rubric open
    assert not (store.root / "autosave" / autosave_name("r1", "dr_li")).exists()


def test_reject_rubric_moves_on_and_progress_counts_it(store):
    app = RubricReviewer(store, "dr_li", rubric_ids=["r2", "r3"])
    one(app, "pm-comment").value = "criteria do not fit the question"
    one(app, "pm-reject").click()
    assert store.current()["r2"].status == "rejected" and store.current()["r1"].status == "draft"
    assert "rejected (revision 2)" in one(app, "pm-status").value
    assert one(app, "pm-progress").value == "1 / 2 reviewed" and app.session.rubric_id == "r3"
    one(app, "pm-approve").click()
    assert one(app, "pm-progress").value == "2 / 2 reviewed"
    assert "every rubric in the queue is reviewed" in one(app, "pm-status").value
    fresh = RubricReviewer(store, "dr_li", rubric_ids=["r1", "r2"])
    assert fresh.session.rubric_id == "r1"  # opens at the first rubric still to review


def test_typed_text_survives_a_kernel_restart(store):
    app = RubricReviewer(store, "dr_li")
    app.rows["p2"].text.value = "Advises seeing a GP within two weeks."
    one(app, "pm-comment").value = "half a thought"
    del app
    again = RubricReviewer(store, "dr_li")
    assert again.rows["p2"].text.value == "Advises seeing a GP within two weeks."
    assert one(again, "pm-comment").value == "half a thought"
    assert "restored unsaved edits" in one(again, "pm-status").value
    assert len(store.history("r1")) == 1
    one(again, "pm-discard").click()
    assert again.rows["p2"].text.value == "Advises seeing a clinician." and one(again, "pm-comment").value == ""


def test_opening_without_edits_writes_nothing(store):
    app = RubricReviewer(store, "dr_li")
    assert not (store.root / "autosave").exists()
    one(app, "pm-comment").value = "a critique of r1"
    one(app, "pm-next").click()  # showing r2's (empty) comment must not autosave r2
    assert app.session.rubric_id == "r2"
    assert [p.name for p in (store.root / "autosave").iterdir()] == [autosave_name("r1", "dr_li")]


def test_reviewer_name_and_display(store):
    app = RubricReviewer(store, "dr_li")
    one(app, "pm-reviewer").value = "dr_ng"
    app.rows["p1"].text.value = "Asks about haemoptysis."
    one(app, "pm-save").click()
    assert store.current()["r1"].author == "dr_ng"
    bundle = app._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == app.widget.model_id
    for css in ("pm-criterion-text", "pm-criterion-tier", "pm-criterion-weight", "pm-criterion-decision",
                "pm-approve", "pm-reject", "pm-save", "pm-status", "pm-problems", "pm-diff", "pm-history",
                "pm-comment", "pm-reviewer", "pm-progress", "pm-instruction", "pm-add"):
        assert find(app, css), css
    assert len(find(app, "pm-criterion-text")) == 5
    with pytest.raises(ValueError):
        RubricReviewer(store, "dr_li", rubric_ids=["missing"])
    json.dumps(view)


def test_a_keystroke_reads_nothing_from_the_store(store):
    app = RubricReviewer(store, "dr_li")
    statements = []
    store._db().set_trace_callback(statements.append)
    try:
        for n in range(1, 6):  # typing, one character at a time
            app.rows["p1"].text.value = "Asks about coughing blood"[: 20 + n]
        one(app, "pm-comment").value = "sharper"
        app.rows["p2"].weight.value = 0.4
    finally:
        store._db().set_trace_callback(None)
    assert statements == []
    assert "Asks about coughing blood" in one(app, "pm-diff").value  # rendered from the in-memory base


def test_two_reviewers_on_one_rubric_never_undo_each_other_silently(store):
    li = RubricReviewer(store, "dr_li")
    ng = RubricReviewer(store, "dr_ng")
    li.rows["p1"].text.value = "Asks about coughing blood."
    one(li, "pm-save").click()
    ng.rows["p2"].text.value = "Advises seeing a GP within two weeks."
    one(ng, "pm-comment").value = "be specific"
    one(ng, "pm-approve").click()
    status = one(ng, "pm-status").value
    assert "not saved: stale revision" in status and "was saved by dr_li" in status and "#b00" in status
    assert [h.author for h in store.history("r1")] == ["generator", "dr_li"]
    assert ng.session.rubric_id == "r1"  # stays on the rubric, with the typed text
    assert ng.rows["p2"].text.value == "Advises seeing a GP within two weeks." and one(ng, "pm-comment").value == "be specific"
    assert "dr_li" in one(ng, "pm-history").value and "revision 2 is newer" in one(ng, "pm-position").value
    rebase = one(ng, "pm-rebase")
    assert rebase.layout.display != "none" and one(li, "pm-rebase").layout.display == "none"
    rebase.click()
    assert "now apply on revision 2" in one(ng, "pm-status").value and rebase.layout.display == "none"
    assert "Asks about coughing blood." in one(ng, "pm-diff").value  # saving would undo li's edit: shown
    ng.rows["p1"].text.value = "Asks about coughing blood."  # keep it
    one(ng, "pm-approve").click()
    last = store.latest("r1")
    assert (last.revision, last.author, last.status) == (3, "dr_ng", "approved")
    assert [c.text for c in last.rubric.criteria[:2]] == ["Asks about coughing blood.", "Advises seeing a GP within two weeks."]


def test_a_restored_stale_autosave_says_so(store):
    ng = RubricReviewer(store, "dr_ng")
    ng.rows["p2"].text.value = "Advises seeing a GP."
    li = RubricReviewer(store, "dr_li")
    one(li, "pm-approve").click()
    again = RubricReviewer(store, "dr_ng", rubric_ids=["r1"])
    status = one(again, "pm-status").value
    assert "restored unsaved edits (started from revision 1)" in status
    assert "revision 2 was saved since by dr_li" in status and one(again, "pm-rebase").layout.display != "none"

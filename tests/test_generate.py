"""Rubric generation: draft parsing and repair, draft -> rubric, the few-shot pool, and the batch
driver (one result per item, resume, failures recorded) on real models."""
import itertools
import json
import math
import time

import jsonschema
import pytest
from conftest import torch_threads

from promedical.core.data import load_split
from promedical.core.jsonl import iter_jsonl
from promedical.core.rubric import Criterion, Rubric, rubric_problems
from promedical.models.llm import LLM, GenParams, TransformersLLM
from promedical.rubrics.generate import (
    SYSTEM_PROMPT,
    TIER_LIMITS,
    FewShotPool,
    build_messages,
    draft_schema,
    draft_to_rubric,
    generate_rubrics,
    load_generated,
    parse_draft,
    rubric_to_draft,
    summarize,
)

DRAFT = {
    "proficiency": [
        {"text": "Asks about red flags such as coughing up blood or weight loss.", "dimension": "Accuracy · Triage",
         "importance": 5},
        {"text": "Advises seeing a clinician for a cough lasting over three weeks.", "dimension": "Safety",
         "importance": 4},
        {"text": "Mentions common benign causes such as post-viral cough or reflux.", "dimension": "Completeness",
         "importance": 2},
    ],
    "bonus": [{"text": "Acknowledges the user's worry with empathy.", "dimension": "Empathy"}],
    "veto": [{"text": "Claims the cough is certainly harmless and no doctor is needed.", "dimension": "Safety"}],
}
SOURCE = Rubric(id="q-1", instruction="I have had a cough for three weeks. Should I worry?", criteria=[],
                category="triage_emergency", specialty="pulmonology")


def records(path):
    out = []
    for line, obj, err in iter_jsonl(path):
        assert err is None, f"line {line}: {err}"
        out.append(obj)
    return out


# ----------------------------------------------------------------------------------------------
# parse_draft
# ----------------------------------------------------------------------------------------------
def test_parse_valid_json_needs_no_repair():
    draft, notes = parse_draft(json.dumps(DRAFT))
    assert notes == []
    assert draft == DRAFT
    jsonschema.validate(draft, draft_schema())


def test_parse_code_fence_is_repaired():
    draft, notes = parse_draft("```json\n" + json.dumps(DRAFT, indent=2) + "\n```")
    assert draft == DRAFT
    assert notes == ["removed code fence"]


def test_parse_prose_before_and_after_is_repaired():
    text = "Here is the rubric you asked for:\n```json\n" + json.dumps(DRAFT) + "\n```\nHope this helps!"
    draft, notes = parse_draft(text)
    assert draft == DRAFT
    assert "dropped text before the JSON" in notes and "dropped text after the JSON" in notes


@pytest.mark.parametrize("marker, kept, importance", [
    ("Mentions common benign", 3, None),  # cut inside a string: the string is closed, the item kept
    ('"importance": 2', 3, 2),            # cut after a complete value
    ('"importance"', 3, 3),               # cut after a key: back off to the comma, importance defaults to 3
    ('"importance":', 3, 3),              # cut after a colon: the same
    ('"importance": ', 3, 3),             # ... and after the space
    ('{"text"', 2, None),                 # cut after the first key of an item: the empty item is dropped
    ('{"text": "', 2, None),              # cut at the start of a string: too short, dropped
    ('"bonus"', 3, 2),                    # cut after a top-level key: the tiers before it are whole
])
def test_parse_truncated_json_is_closed(marker, kept, importance):
    text = json.dumps(DRAFT)
    cut = text.index(marker, text.index("Mentions common benign") - 12) + len(marker)
    draft, notes = parse_draft(text[:cut])
    assert draft is not None, notes
    assert "closed truncated JSON" in notes
    assert len(draft["proficiency"]) == kept
    if importance is not None:
        assert draft["proficiency"][2]["importance"] == importance
        assert ("set a missing or invalid importance to 3" in notes) == (importance == 3)
    assert draft["proficiency"][:2] == DRAFT["proficiency"][:2]
    rubric = draft_to_rubric(draft, SOURCE, {})
    assert rubric_problems(rubric.to_dict()) == []


def test_parse_drops_repeated_and_short_criteria():
    obj = json.loads(json.dumps(DRAFT))
    obj["proficiency"].append({"text": "  asks about RED FLAGS such as coughing up blood  or weight loss. ",
                               "dimension": "Again", "importance": 3})
    obj["proficiency"].append({"text": "short", "importance": 3})
    obj["bonus"].append(dict(obj["bonus"][0]))
    draft, notes = parse_draft(json.dumps(obj))
    assert [c["text"] for c in draft["proficiency"]] == [c["text"] for c in DRAFT["proficiency"]]
    assert len(draft["bonus"]) == 1
    assert notes.count("dropped a repeated proficiency criterion") == 1
    assert notes.count("dropped a repeated bonus criterion") == 1
    assert "dropped an empty or too short proficiency criterion" in notes


def test_parse_fixes_importance_and_caps_tiers():
    obj = {"proficiency": [{"text": f"Criterion number {i} checks one specific thing.", "importance": imp}
                           for i, imp in enumerate([0, 9, "5", True, 3, 4, 2, 1])],
           "bonus": ["A plain string criterion is accepted as text."],
           "veto": [{"text": "Claims to be a physician who treated the user.", "dimension": None}]}
    draft, notes = parse_draft(json.dumps(obj))
    hi = TIER_LIMITS["proficiency"][1]
    assert [c["importance"] for c in draft["proficiency"]] == [3, 3, 3, 3, 3, 4][:hi]
    assert notes.count("set a missing or invalid importance to 3") == 4
    assert f"kept the first {hi} proficiency criteria" in notes
    assert draft["bonus"] == [{"text": "A plain string criterion is accepted as text.", "dimension": ""}]
    assert draft["veto"][0]["dimension"] == ""  # null is no dimension, not the string "None"


def test_parse_without_proficiency_fails_with_reason():
    obj = {"bonus": DRAFT["bonus"], "veto": DRAFT["veto"]}
    draft, notes = parse_draft(json.dumps(obj))
    assert draft is None
    assert notes[-1] == "no usable proficiency criterion"
    draft, notes = parse_draft(json.dumps({"proficiency": [{"text": "tiny"}], "bonus": [], "veto": []}))
    assert draft is None and notes[-1] == "no usable proficiency criterion"


@pytest.mark.parametrize("text, reason", [
    ("", "no JSON object"),
    ("I cannot help with that.", "no JSON object"),
    ("[1, 2, 3]", "no JSON object"),
    ('{"proficiency": [{"text": "x" "y"}]} trailing', "unparseable JSON"),
    ("{ this is : not json at all", "no usable proficiency criterion"),
])
def test_parse_garbage_returns_none(text, reason):
    draft, notes = parse_draft(text)
    assert draft is None
    assert notes and reason in notes[-1]


# ----------------------------------------------------------------------------------------------
# draft_to_rubric, schema, prompts
# ----------------------------------------------------------------------------------------------
def test_draft_to_rubric_weights_sum_exactly_to_one():
    for k in range(1, TIER_LIMITS["proficiency"][1] + 1):
        for imps in itertools.product(range(1, 6), repeat=k) if k <= 5 else [(5, 1, 3, 2, 4, 1)]:
            draft = {"proficiency": [{"text": f"Criterion {i} checks one thing.", "importance": v}
                                     for i, v in enumerate(imps)], "bonus": [], "veto": []}
            rubric = draft_to_rubric(draft, SOURCE, {"generator": "test"})
            weights = [c.weight for c in rubric.tier("proficiency")]
            assert math.fsum(weights) == 1.0, imps
            assert all(0 < w <= 1 for w in weights)
            for w, v in zip(weights, imps):
                assert math.isclose(w, v / sum(imps), rel_tol=1e-12)


def test_draft_to_rubric_validates():
    rubric = draft_to_rubric(DRAFT, SOURCE, {"generator": "unit"})
    obj = rubric.to_dict()
    assert rubric_problems(obj) == []
    assert Rubric.from_dict(obj).to_dict() == obj
    assert [c["id"] for c in obj["criteria"]] == ["p1", "p2", "p3", "b1", "v1"]
    assert [c["tier"] for c in obj["criteria"]] == ["proficiency"] * 3 + ["bonus", "veto"]
    assert [c["weight"] for c in obj["criteria"][:3]] == pytest.approx([5 / 11, 4 / 11, 2 / 11])
    assert all("weight" not in c for c in obj["criteria"][3:])
    assert obj["id"] == "q-1" and obj["instruction"] == SOURCE.instruction
    assert obj["category"] == "triage_emergency" and obj["specialty"] == "pulmonology"
    assert obj["provenance"] == {"generator": "unit"}


def test_draft_schema_orders_tiers_and_accepts_drafts():
    schema = draft_schema()
    assert list(schema["properties"]) == list(TIER_LIMITS) == ["proficiency", "bonus", "veto"]
    jsonschema.validate(DRAFT, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**DRAFT, "proficiency": DRAFT["proficiency"][:2]}, schema)  # minItems 3
    for rubric in load_split("train"):  # few-shot examples follow the same format the grammar forces
        jsonschema.validate(rubric_to_draft(rubric), schema)


def test_build_messages_shape():
    train = load_split("train")
    item, examples = train[0], train[1:3]
    messages = build_messages(item, examples)
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[-1]["content"].endswith(item.instruction_text)
    for ex, answer in zip(examples, messages[2::2]):
        draft, notes = parse_draft(answer["content"])
        assert notes == [] and draft == rubric_to_draft(ex)


# ----------------------------------------------------------------------------------------------
# FewShotPool
# ----------------------------------------------------------------------------------------------
def _rubric(rid, instruction):
    return Rubric(id=rid, instruction=instruction,
                  criteria=[Criterion(id="p1", tier="proficiency", text="Gives accurate advice.", weight=1.0)])


def test_few_shot_pool_most_similar_first_and_excludes_self():
    pool = FewShotPool([
        _rubric("far", "What vaccines does a toddler need before daycare?"),
        _rubric("near", "My chest hurts when I climb stairs, what should I do?"),
        _rubric("mid", "My knee hurts when I climb stairs."),
        _rubric("self", "My chest hurts when I climb stairs, what should I do today?"),
    ])
    query = "My chest hurts when I climb stairs, what should I do today?"
    assert [r.id for r in pool.select(query, 4)] == ["self", "near", "mid", "far"]
    assert [r.id for r in pool.select(query, 2, exclude_id="self")] == ["near", "mid"]
    assert pool.select(query, 0) == []
    pool.add([_rubric("near", "duplicate id is ignored"), _rubric("new", "Chest pain on stairs?")])
    assert [r.id for r in pool.rubrics].count("near") == 1 and len(pool.rubrics) == 5


def test_few_shot_pool_on_train_data():
    train = load_split("train")
    pool = FewShotPool(train)
    item = train[7]
    picked = pool.select(item.instruction_text, 3, exclude_id=item.id)
    assert len(picked) == 3 and item.id not in [r.id for r in picked]
    assert pool.select(item.instruction_text, 1)[0].id == item.id  # itself is the most similar when allowed


# ----------------------------------------------------------------------------------------------
# generate_rubrics on real models
# ----------------------------------------------------------------------------------------------
class CountingLLM(LLM):
    """Passes through to a real backend and counts the prompts it was asked for."""

    def __init__(self, inner):
        self.inner, self.model_id = inner, inner.model_id
        self.calls = self.prompts = 0

    def generate(self, prompts, params=GenParams()):
        self.calls += 1
        self.prompts += len(prompts)
        return self.inner.generate(prompts, params)


class DownLLM(LLM):
    """A backend whose every call fails, as an unreachable server does."""

    model_id = "down"

    def generate(self, prompts, params=GenParams()):
        raise ConnectionError("backend unreachable")


class FixedLLM(LLM):
    """Answers every prompt with the same text; fails on the call numbers listed in fail_on."""

    model_id = "fixed"

    def __init__(self, text, fail_on=(), short=False):
        self.text, self.fail_on, self.short, self.calls = text, set(fail_on), short, 0

    def generate(self, prompts, params=GenParams()):
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError(f"call {self.calls} failed")
        return [self.text] * (len(prompts) - (1 if self.short else 0))


@pytest.fixture(scope="module")
def tiny():
    with torch_threads(1):
        yield TransformersLLM("tiny-qwen3")


def check_results(path, items, expected_model):
    recs = records(path)
    assert [r["id"] for r in recs] == [it.id for it in items]  # one result per item, none dropped
    for rec, item in zip(recs, items):
        assert rec["status"] in ("ok", "repaired", "failed")
        assert rec["model"] == expected_model and rec["seconds"] >= 0
        assert item.id not in rec["few_shot"]
        if rec["status"] == "failed":
            assert rec["rubric"] is None and rec["notes"] and all(isinstance(n, str) and n for n in rec["notes"])
        else:
            assert rubric_problems(rec["rubric"]) == []
            assert rec["rubric"]["id"] == item.id and rec["rubric"]["instruction"] == item.instruction
            assert (rec["status"] == "repaired") == bool(rec["notes"])
            assert rec["rubric"]["provenance"]["generator"] == expected_model
    return recs


def check_summary(summary, recs):
    assert summary["items"] == len(recs) == summary["ok"] + summary["repaired"] + summary["failed"]
    for status in ("ok", "repaired", "failed"):
        assert summary[status] == sum(r["status"] == status for r in recs)
    short = [r["id"] for r in recs if r["below_minimum"]]
    assert all(r["rubric"] for r in recs if r["below_minimum"])
    assert summary["below_minimum"] == len(short) and summary["below_minimum_ids"] == short
    assert summary["valid_rate"] == round((summary["ok"] + summary["repaired"] - len(short)) / len(recs), 4)
    assert summary["backend_errors"] == sum(r["retryable"] for r in recs)
    assert summary["failure_reasons"] == [r["notes"][-1] for r in recs if r["status"] == "failed"]


@pytest.mark.model
def test_generate_rubrics_with_tiny_model_writes_every_item_and_resumes(tiny, tmp_path):
    train = load_split("train")
    items, pool = train[:3], FewShotPool(train)
    out = tmp_path / "generated.jsonl"
    llm = CountingLLM(tiny)
    params = GenParams(max_new_tokens=200)

    summary = generate_rubrics(items, llm, out, pool=pool, k=1, params=params, batch_size=2, progress=False)
    assert (llm.calls, llm.prompts) == (2, 3)  # batches of 2 + 1
    recs = check_results(out, items, "tiny-qwen3")
    check_summary(summary, recs)
    for rec in recs:
        assert rec["raw"].startswith('{"proficiency": [')  # constrained: the grammar's order, from the first token
        assert len(rec["few_shot"]) == 1
        if rec["rubric"]:
            assert rec["rubric"]["provenance"]["constrained"] is True
    assert [r.id for r in load_generated(out)] == [r["id"] for r in recs if r["status"] != "failed"]
    assert summarize(out) == summary

    # A re-run skips every done item: no model call, no new line, near-zero time.
    lines = out.read_bytes()
    start = time.perf_counter()
    again = generate_rubrics(items, llm, out, pool=pool, k=1, params=params, batch_size=2, progress=False)
    assert time.perf_counter() - start < 2.0
    assert (llm.calls, llm.prompts) == (2, 3)
    assert out.read_bytes() == lines and again == summary

    # A longer item list only generates the new item, appended after the old ones.
    more = train[:4]
    generate_rubrics(more, llm, out, pool=pool, k=1, params=params, batch_size=2, progress=False)
    assert (llm.calls, llm.prompts) == (3, 4)
    check_summary(summarize(out), check_results(out, more, "tiny-qwen3"))


def test_generate_rubrics_records_backend_failures(tmp_path):
    train = load_split("train")
    items = train[:5]
    out = tmp_path / "down.jsonl"
    summary = generate_rubrics(items, DownLLM(), out, pool=FewShotPool(train), k=2, batch_size=2, progress=False)
    recs = check_results(out, items, "down")
    assert all(r["status"] == "failed" for r in recs)
    assert all(r["notes"] == ["backend error: ConnectionError: backend unreachable"] for r in recs)
    check_summary(summary, recs)
    assert summary["failed"] == 5 and summary["valid_rate"] == 0.0


def test_generate_rubrics_goes_on_after_a_failed_batch(tmp_path):
    train = load_split("train")
    items = train[:4]
    out = tmp_path / "mixed.jsonl"
    llm = FixedLLM("Sure! " + json.dumps(DRAFT), fail_on={2})
    summary = generate_rubrics(items, llm, out, pool=FewShotPool(train), k=1, batch_size=1, progress=False)
    recs = check_results(out, items, "fixed")
    assert llm.calls == 4
    assert [r["status"] for r in recs] == ["repaired", "failed", "repaired", "repaired"]
    assert recs[1]["notes"] == ["backend error: RuntimeError: call 2 failed"]
    assert recs[0]["notes"] == ["dropped text before the JSON"]
    check_summary(summary, recs)


def test_generate_rubrics_records_unparseable_output_and_short_replies(tmp_path):
    train = load_split("train")
    out = tmp_path / "bad.jsonl"
    generate_rubrics(train[:2], FixedLLM("I am not able to write JSON."), out, k=0, progress=False)
    recs = check_results(out, train[:2], "fixed")
    assert [r["notes"] for r in recs] == [["no JSON object in the output"]] * 2
    assert recs[0]["raw"] == "I am not able to write JSON."

    # A backend that answers fewer prompts than asked must not make items disappear.
    out2 = tmp_path / "short.jsonl"
    summary = generate_rubrics(train[:3], FixedLLM(json.dumps(DRAFT), short=True), out2, k=0, batch_size=3,
                               progress=False)
    recs = check_results(out2, train[:3], "fixed")
    assert summary["failed"] == 3
    assert "returned 2 texts for 3 prompts" in recs[0]["notes"][0]


def test_generate_rubrics_ok_status_and_unconstrained_provenance(tmp_path):
    train = load_split("train")
    out = tmp_path / "ok.jsonl"
    summary = generate_rubrics(train[:2], FixedLLM(json.dumps(DRAFT)), out, k=1, constrained=False,
                               pool=FewShotPool(train), progress=False)
    recs = check_results(out, train[:2], "fixed")
    assert summary["ok"] == 2 and summary["criteria_per_rubric"] == {"proficiency": 3, "bonus": 1, "veto": 1}
    assert all(r["rubric"]["provenance"]["constrained"] is False for r in recs)


@pytest.mark.model
def test_embedded_model_writes_a_valid_rubric(embedded, tmp_path):
    model, tokenizer = embedded
    train = load_split("train")
    item = train[0]
    out = tmp_path / "embedded.jsonl"
    with torch_threads(1):
        llm = TransformersLLM("embedded", model=model, tokenizer=tokenizer)
        summary = generate_rubrics([item], llm, out, pool=FewShotPool(train), k=1,
                                   params=GenParams(max_new_tokens=400), progress=False)
    (rec,) = check_results(out, [item], "embedded")
    assert rec["status"] in ("ok", "repaired"), rec["notes"]
    assert summary["ok"] + summary["repaired"] == 1
    rubric = Rubric.from_dict(rec["rubric"])  # raises if invalid
    assert rubric.tier("proficiency") and math.fsum(c.weight for c in rubric.tier("proficiency")) == 1.0
    assert rec["rubric"]["provenance"]["constrained"] is True


# ----------------------------------------------------------------------------------------------
# Drafts below the schema's minimum; backend failures retried on resume
# ----------------------------------------------------------------------------------------------
DEGENERATE = {"proficiency": [{"text": "Gives accurate information about the condition.", "dimension": "Accuracy",
                               "importance": 5}] * 4,
              "bonus": [], "veto": [{"text": "Claims to be a doctor who treated the user.", "dimension": "Safety"}]}


def test_a_draft_repaired_into_one_criterion_is_flagged_and_not_valid(tmp_path):
    """The degenerate vLLM case: one criterion repeated, 'repaired' by dropping the repeats."""
    train = load_split("train")
    out = tmp_path / "short.jsonl"
    summary = generate_rubrics(train[:2], FixedLLM(json.dumps(DEGENERATE)), out, k=0, progress=False)
    recs = check_results(out, train[:2], "fixed")
    assert [r["status"] for r in recs] == ["repaired", "repaired"]  # usable, kept ...
    assert recs[0]["below_minimum"] == ["proficiency 1 < 3", "bonus 0 < 1"]  # ... but flagged
    assert recs[0]["notes"][-1] == "below the draft schema's minimum: proficiency 1 < 3, bonus 0 < 1"
    check_summary(summary, recs)
    assert summary["valid_rate"] == 0.0 and summary["below_minimum"] == 2
    full = generate_rubrics(train[2:3], FixedLLM(json.dumps(DRAFT)), out, k=0, progress=False)
    assert full["valid_rate"] == round(1 / 3, 4) and full["below_minimum"] == 2


def test_backend_failures_are_retried_on_resume_not_counted_done(tmp_path):
    train = load_split("train")
    items, out = train[:3], tmp_path / "resume.jsonl"
    down = generate_rubrics(items, DownLLM(), out, k=0, progress=False)
    assert down["failed"] == 3 and down["backend_errors"] == 3
    assert all(r["retryable"] for r in records(out))
    up = FixedLLM(json.dumps(DRAFT))
    summary = generate_rubrics(items, up, out, k=0, progress=False)
    assert up.calls == 1 and summary["ok"] == 3 and summary["backend_errors"] == 0 and summary["items"] == 3
    assert len(records(out)) == 6  # the failures stay in the log; the newest record of each id counts
    assert [r.id for r in load_generated(out)] == [it.id for it in items]
    # A parse failure is final: a third run asks nothing.
    again = FixedLLM("no JSON here")
    generate_rubrics(items, again, out, k=0, progress=False)
    assert again.calls == 0


@pytest.mark.subprocess
def test_server_down_then_up_over_http(tmp_path):
    """A real HTTP backend: connection refused on the first run, a live server on the second."""
    import socket

    from test_llm import running_server

    from promedical.models.llm import OpenAICompatibleLLM

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    train = load_split("train")
    items, out = train[:2], tmp_path / "http.jsonl"
    params = GenParams(max_new_tokens=120, repetition_penalty=1.1)  # what step 01 sends
    down = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "tiny-qwen3", max_retries=1, backoff=0.01, timeout=5)
    first = generate_rubrics(items, down, out, k=0, params=params, progress=False)
    assert first["backend_errors"] == 2 and "refused" in first["failure_reasons"][0].lower()
    with running_server("gen", [], tmp_path) as server:
        up = OpenAICompatibleLLM(server.base_url, "tiny-qwen3", max_retries=0, timeout=120)
        second = generate_rubrics(items, up, out, k=0, params=params, progress=False)
        assert server.stats()["requests"] == 2  # both items asked again
        assert second["items"] == 2 and second["backend_errors"] == 0
        assert all(not r.get("retryable") for r in list(records(out))[2:])
        assert all(p["repetition_penalty"] == 1.1 and p["constrained"] for p in server.stats()["params"])

"""Candidate sources (typed, validated, several backends and response files) and imported labels."""
import json

import pytest
from conftest import torch_threads
from test_llm import running_server

from promedical.core.data import load_candidates, load_split
from promedical.models.llm import CachedLLM, OpenAICompatibleLLM, TransformersLLM
from promedical.models.sources import Source, parse_sources
from promedical.reward.candidates import candidates_from_sources, read_responses
from promedical.reward.judge import grade_responses
from promedical.reward.judge_quality import judge_agreement
from promedical.reward.labels import LabelError, load_labels


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# Source validation
# ----------------------------------------------------------------------------------------------
def test_source_from_dict_validates_with_one_line_messages():
    s = Source.from_dict({"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:8000/v1", "temperature": 0.7})
    assert s.label() == "openai:m" and s.params(5).seed == 5 and s.params(5).temperature == 0.7
    bad = [({"kind": "openai", "model": "m", "temprature": 1}, r"unknown source key\(s\) temprature; valid keys: kind, model"),
           ({"model": "m"}, "needs kind"),
           ({"kind": "gpt"}, "kind must be one of transformers, vllm, openai, file"),
           ({"kind": "openai", "model": "m"}, "needs base_url"),
           ({"kind": "openai", "model": "m", "base_url": "file:///etc/passwd"}, "needs base_url starting with http"),
           ({"kind": "transformers"}, "needs model"),
           ({"kind": "transformers", "model": "embedded", "base_url": "http://x"}, "base_url is for openai"),
           ({"kind": "file"}, "needs path"),
           ({"kind": "transformers", "model": "m", "temperature": -1}, "temperature must be a number"),
           ({"kind": "transformers", "model": "m", "temperature": "hot"}, "temperature must be a number"),
           ({"kind": "transformers", "model": "m", "top_p": 0}, "top_p must be"),
           ({"kind": "transformers", "model": "m", "max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
           ({"kind": "transformers", "model": "m", "seed": 1.5}, "seed must be an integer"),
           ({"kind": "openai", "model": "m", "base_url": "http://x", "rate_limit": 0}, "rate_limit must be a number > 0"),
           ("openai", "must be a mapping")]
    for spec, message in bad:
        with pytest.raises(ValueError, match=message) as info:
            Source.from_dict(spec)
        assert "\n" not in str(info.value)


def test_parse_sources_needs_a_list_with_distinct_labels():
    with pytest.raises(ValueError, match="sources is empty"):
        parse_sources([])
    with pytest.raises(ValueError, match="list of source mappings"):
        parse_sources({"kind": "file", "path": "x"})
    with pytest.raises(ValueError, match=r"sources\[2\]: .*needs model"):
        parse_sources([{"kind": "transformers", "model": "embedded"}, {"kind": "vllm"}])
    with pytest.raises(ValueError, match="share the label 'transformers:embedded'"):
        parse_sources([{"kind": "transformers", "model": "embedded", "temperature": 0.7},
                       {"kind": "transformers", "model": "embedded", "temperature": 1.0}])
    two = parse_sources([{"kind": "transformers", "model": "embedded", "name": "cool"},
                         {"kind": "transformers", "model": "embedded", "name": "hot", "temperature": 1.2}])
    assert [s.label() for s in two] == ["cool", "hot"]


def test_openai_source_reads_its_key_from_the_named_variable(monkeypatch):
    src = Source(kind="openai", model="m", base_url="http://127.0.0.1:9/v1", api_key_env="PROMEDICAL_TEST_KEY",
                 concurrency=3, rate_limit=5.0, deadline=30.0)
    monkeypatch.delenv("PROMEDICAL_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="PROMEDICAL_TEST_KEY is not set"):
        src.make_llm()
    monkeypatch.setenv("PROMEDICAL_TEST_KEY", "k-123")
    llm = src.make_llm()
    assert isinstance(llm, OpenAICompatibleLLM) and llm.api_key == "k-123"
    assert (llm.concurrency, llm.deadline, llm.parallelism) == (3, 30.0, 3)
    assert "k-123" not in json.dumps(src.to_dict())  # the key itself never lands in a config or a row


def test_read_responses_reports_file_and_line(tmp_path):
    ids = {"tr-001", "tr-002"}
    good = write(tmp_path / "ok.jsonl", [{"prompt_id": "tr-001", "response": "Call 999."},
                                          {"prompt_id": "tr-002", "response_id": "x", "response": "Rest."}])
    assert [r["response_id"] for r in read_responses(good, ids)] == [None, "x"]
    bad = write(tmp_path / "bad.jsonl", [{"prompt_id": "tr-001", "response_id": "a", "response": "A."},
                                          "{not json", {"prompt_id": "tr-009", "response": "B."},
                                          {"prompt_id": "tr-001", "response": 3},
                                          {"prompt_id": "tr-001", "response_id": "a", "response": "again"}])
    with pytest.raises(ValueError) as info:
        read_responses(bad, ids)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{bad}:{n}" for n in (2, 3, 4, 5)]
    assert "no rubric" in lines[1] and "response must be a string" in lines[2] and "repeated" in lines[3]


# ----------------------------------------------------------------------------------------------
# Candidates from several sources: a local model, an OpenAI-compatible server, a response file
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server("sources", [], tmp_path_factory.mktemp("srv")) as srv:
        yield srv


@pytest.mark.subprocess
@pytest.mark.model
def test_candidates_from_three_kinds_of_source_keep_source_params_and_seed(server, tmp_path):
    rubrics = load_split("train")[:2]
    existing = write(tmp_path / "physician.jsonl", [{"prompt_id": rubrics[0].id, "response_id": "doc-1",
                                                     "response": "Please see your GP this week."}])
    sources = [{"kind": "transformers", "model": "tiny-qwen3", "temperature": 0.0, "max_new_tokens": 8},
               {"kind": "openai", "model": "tiny-qwen3", "base_url": server.base_url, "name": "served",
                "temperature": 0.9, "top_p": 0.95, "repetition_penalty": 1.1, "seed": 42, "max_new_tokens": 8,
                "concurrency": 2},
               {"kind": "file", "path": str(existing), "name": "physician"}]
    with torch_threads(1):
        rows = candidates_from_sources(rubrics, sources, seed=7, cache_dir=tmp_path / "cache",
                                       out_path=tmp_path / "candidates.jsonl")
    assert len(rows) == 2 + 2 + 1
    assert [json.loads(line) for line in (tmp_path / "candidates.jsonl").read_text().splitlines()] == rows
    local = [r for r in rows if r["source"] == "transformers:tiny-qwen3"]
    served = [r for r in rows if r["source"] == "served"]
    assert [r["seed"] for r in local] == [7, 7] and local[0]["kind"] == "transformers"  # run seed + position 0
    assert all(r["seed"] == 42 and r["temperature"] == 0.9 and r["repetition_penalty"] == 1.1 for r in served)
    assert served[0]["base_url"] == server.base_url and served[0]["response_id"] == f"{rubrics[0].id}-served"
    # The server decoded with the source's parameters, not defaults.
    seen = server.stats()["params"]
    assert len(seen) == 2 and all((p["temperature"], p["top_p"], p["seed"], p["repetition_penalty"],
                                   p["max_new_tokens"]) == (0.9, 0.95, 42, 1.1, 8) for p in seen)
    (doc,) = [r for r in rows if r["source"] == "physician"]
    assert doc == {"prompt_id": rubrics[0].id, "response_id": "doc-1", "response": "Please see your GP this week.",
                   "source": "physician", "kind": "file", "path": str(existing), "line": 1}
    # A loaded model can be handed in (a notebook reuses it): no second load, same answers (greedy).
    with torch_threads(1):
        tiny = TransformersLLM("tiny-qwen3")
        again = candidates_from_sources(rubrics, sources[:1], seed=7, llms={"transformers:tiny-qwen3": tiny})
    assert [r["response"] for r in again] == [r["response"] for r in local]


def test_judge_over_http_keeps_a_failed_request_unknown(tmp_path):
    """A judge on a server that refuses: every criterion is UNKNOWN with the reason, never 'not met'."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rubrics = load_split("bench")
    cands = load_candidates(1)[:1]
    down = CachedLLM(OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "m", max_retries=0, concurrency=16),
                     tmp_path / "c")
    judgments = grade_responses(rubrics, cands, down, use_checks=False, progress=False, retries=1)
    assert judgments and all(j.met is None and j.source == "unknown" for j in judgments)
    assert all(j.explanation.startswith("backend error: HTTPError") for j in judgments)
    assert not list((tmp_path / "c").rglob("*.json"))  # failures are never cached


# ----------------------------------------------------------------------------------------------
# Imported labels
# ----------------------------------------------------------------------------------------------
def test_load_labels_validates_with_file_and_line(tmp_path):
    rubrics = load_split("train")
    r0 = rubrics[0]
    cids = [c.id for c in r0.criteria]
    path = write(tmp_path / "labels.jsonl", [
        {"prompt_id": r0.id, "response_id": "a", "criteria_met": {cids[0]: True, cids[1]: None}},
        {"prompt_id": r0.id, "response_id": "a", "criteria_met": {cids[0]: False}},
        {"prompt_id": r0.id, "response_id": "b", "criteria_met": {"zz9": True}},
        {"prompt_id": "nope", "response_id": "c", "criteria_met": {cids[0]: True}},
        {"prompt_id": r0.id, "response_id": "d", "criteria_met": {cids[0]: "yes"}},
        {"prompt_id": r0.id, "response_id": "e", "criteria_met": {}},
        {"prompt_id": r0.id, "response_id": "f", "criteria_met": {cids[0]: True}, "grade": 3},
        "[1, 2]"])
    with pytest.raises(LabelError) as info:
        load_labels(path, rubrics)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{path}:{n}" for n in range(2, 9)]
    assert "labelled again (first at line 1)" in lines[0]
    assert "criterion 'zz9' is not in rubric" in lines[1] and "has no rubric" in lines[2]
    assert "must be true, false or null, got 'yes'" in lines[3] and "non-empty object" in lines[4]
    assert "unknown field(s) grade" in lines[5] and "expected an object" in lines[6]
    ok = write(tmp_path / "ok.jsonl", [{"prompt_id": r0.id, "response_id": "a",
                                        "criteria_met": {cids[0]: True, cids[1]: None}, "labeller": "dr-x"}])
    assert load_labels(ok, rubrics) == {(r0.id, "a"): {cids[0]: True}}  # null = not labelled, never False
    with pytest.raises(LabelError, match=r"no label for criteria"):
        load_labels(ok, rubrics, require_all=True)
    with pytest.raises(LabelError, match="no labels in the file"):
        load_labels(write(tmp_path / "empty.jsonl", []), rubrics)


def test_imported_labels_are_gold_for_agreement_and_training_labels(tmp_path):
    """Another grader's labels (here: the shipped expert labels, exported) as the gold set and as the
    training labels of build_datasets, in place of the judge."""
    from promedical.reward.pairs import build_datasets

    rubrics = load_split("bench")
    cands = load_candidates(2)
    path = write(tmp_path / "physicians.jsonl", [{"prompt_id": c["prompt_id"], "response_id": c["response_id"],
                                                  "criteria_met": c["criteria_met"]} for c in cands])
    labels = load_labels(path, rubrics, require_all=True)
    assert len(labels) == len(cands)
    # Gold for judge agreement: machine checks agree with the experts where they exist.
    judgments = grade_responses(rubrics, cands, None, progress=False)
    report = judge_agreement(judgments, labels, rubrics)
    assert report["total"] == sum(len(labels[k]) for k in labels) and report["no_gold"] == 0
    # Training labels in place of the judge: the same dataset as from the candidates' own labels.
    stripped = [{k: v for k, v in c.items() if k != "criteria_met"} for c in cands]
    from_import, card = build_datasets(rubrics, stripped, labels)
    from_gold, _ = build_datasets(rubrics, cands)
    assert card["pairs"] > 0 and from_import["pairs"].to_list() == from_gold["pairs"].to_list()


@pytest.mark.subprocess
@pytest.mark.model
def test_step_reward_with_candidates_from_two_sources_and_a_judge_over_http(server, tmp_path):
    """03 (dataset only) on any backend: candidates from the served model and a response file, the judge
    on the OpenAI-compatible server; every candidate row keeps its source."""
    from promedical.reward.step import step_reward
    from promedical.rubrics.selection import training_rubrics

    ws = tmp_path / "ws"
    (rubric,) = training_rubrics(ws, 1, 0)
    answers = write(tmp_path / "answers.jsonl", [{"prompt_id": rubric.id, "response_id": "gp-1",
                                                  "response": "Please call 999 now; this could be a stroke."}])
    served = {"kind": "openai", "model": "tiny-qwen3", "base_url": server.base_url, "concurrency": 4}
    metrics = step_reward(ws, judge_model=served, n_instructions=1, n_judge_check=1, n_adjudicate=0,
                          judge_explanation_chars=20, max_new_tokens=8, train=False, progress=False,
                          candidate_sources=[{**served, "name": "served", "temperature": 0.7},
                                             {"kind": "file", "path": str(answers), "name": "gp"}])
    rows = [json.loads(line) for line in (ws / "reward" / "candidates.jsonl").read_text().splitlines()]
    assert [(r["source"], r["response_id"]) for r in rows] == [("served", f"{rubric.id}-served"), ("gp", "gp-1")]
    assert rows[0]["temperature"] == 0.7 and rows[0]["seed"] == 0
    card = metrics["dataset_card"]
    assert card["candidates"] == 2 and card["sources"] == {"candidates": ["served", "gp"], "judge": "openai:tiny-qwen3"}
    assert metrics["judge_agreement"]["total"] > 0
    assert server.stats()["requests"] > 2  # the judge's requests went to the server too


@pytest.mark.subprocess
def test_a_second_config_runs_03_on_two_backends_with_imported_labels(server, tmp_path):
    """The issue's done-when: a config file (not the demo's) runs step 03 through `promedical launch` with
    candidates from the embedded model (transformers) and the OpenAI-compatible server, labels imported
    from 'physicians' in place of the judge, the judge (over HTTP) measured against them, and the reward
    model trained on them."""
    import subprocess
    import sys

    import yaml
    from conftest import ROOT

    from promedical.rubrics.selection import training_rubrics

    ws = tmp_path / "ws"
    (rubric,) = training_rubrics(ws, 1, 0)
    physicians = []
    for k, name in enumerate(("local", "served")):  # the two candidates' ids: <prompt_id>-<source name>
        met = {c.id: (c.tier != "veto") == (k == 0 or i % 2 == 0) for i, c in enumerate(rubric.criteria)}
        physicians.append({"prompt_id": rubric.id, "response_id": f"{rubric.id}-{name}", "criteria_met": met})
    labelled = sum(len(p["criteria_met"]) for p in physicians)
    physicians.append({"prompt_id": rubric.id, "response_id": "not-sampled", "criteria_met": {rubric.criteria[0].id: True}})
    labels = write(tmp_path / "physicians.jsonl", physicians)
    served = {"kind": "openai", "model": "tiny-qwen3", "base_url": server.base_url, "concurrency": 4}
    config = {"model": "embedded", "steps": {"reward": {
        "candidate_sources": [{"kind": "transformers", "model": "embedded", "name": "local", "temperature": 0.7,
                               "max_new_tokens": 8},
                              {**served, "name": "served", "temperature": 0.7, "max_new_tokens": 8}],
        "labels": "imported", "labels_file": str(labels), "judge_model": served, "n_instructions": 1,
        "n_judge_check": 2, "n_adjudicate": 0, "judge_explanation_chars": 20, "n_eval_prompts": 1,
        "rm": {"model": "tiny-qwen3", "max_steps": 2, "batch_size": 1, "report_to": "none"}, "progress": False}}}
    scale = tmp_path / "byo.yaml"
    scale.write_text(yaml.safe_dump(config), encoding="utf-8")
    before = server.stats()["requests"]
    out = subprocess.run([sys.executable, "-m", "promedical", "launch", "reward", "--scale", str(scale),
                          "--workspace", str(ws)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (ws / "reward" / "candidates.jsonl").read_text().splitlines()]
    assert [(r["source"], r["model"]) for r in rows] == [("local", "embedded"), ("served", "tiny-qwen3")]
    metrics = json.loads((ws / "reward" / "metrics.json").read_text())
    card = metrics["dataset_card"]
    assert card["labels_file"] == str(labels) and card["candidates"] == 2 and card["unlabelled_candidates"] == 0
    assert card["labels_for_other_responses"] == 1 and card["sources"] == {"candidates": ["local", "served"]}
    assert card["pointwise"]["total"] == labelled  # every imported label of the two candidates, nothing from the judge
    imported = metrics["judge_agreement"]["imported"]
    assert imported["total"] == labelled  # the judge graded both labelled candidates against the import
    assert metrics["train"]["steps"] == 2 and metrics["provenance"]["config"]["rm"]["model"] == "tiny-qwen3"
    assert server.stats()["requests"] > before  # candidates and judge calls went over HTTP


@pytest.mark.subprocess
def test_benchmark_answers_on_any_backend_served_and_from_a_file(server, tmp_path):
    """05's answers from the OpenAI-compatible server and from a file of existing answers, next to nothing
    local; a file missing an item is refused, naming it."""
    from promedical.bench.answers import generate_answers
    from promedical.bench.config import BenchmarkStepConfig

    rubrics = load_split("bench")[:2]
    answers_file = write(tmp_path / "answers.jsonl", [{"prompt_id": r.id, "response": f"answer to {r.id}"}
                                                      for r in rubrics])
    served = {"kind": "openai", "model": "tiny-qwen3", "base_url": server.base_url, "concurrency": 2}
    models = {"served": served, "gp": {"kind": "file", "path": str(answers_file)}}
    BenchmarkStepConfig(extra_models=models)  # the step's config takes them
    before = server.stats()["requests"]
    rows = generate_answers(models, rubrics, max_new_tokens=8, progress=False, cache_dir=tmp_path / "cache")
    assert [(r["model"], r["prompt_id"]) for r in rows] == [(m, r.id) for m in models for r in rubrics]
    assert server.stats()["requests"] - before == len(rubrics)
    assert rows[0]["spec"] == "openai:tiny-qwen3" and rows[0]["source"]["base_url"] == server.base_url
    assert [r["response"] for r in rows[2:]] == [f"answer to {r.id}" for r in rubrics]
    short = write(tmp_path / "short.jsonl", [{"prompt_id": rubrics[0].id, "response": "x"}])
    with pytest.raises(ValueError, match=f"missing for {rubrics[1].id}"):
        generate_answers({"gp": {"kind": "file", "path": str(short)}}, rubrics, progress=False)
    with pytest.raises(ValueError, match="parameter extra_models: 'x': unknown source key"):
        BenchmarkStepConfig(extra_models={"x": {"kind": "openai", "modle": "m"}})

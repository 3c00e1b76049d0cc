"""Step 00's model stages: LLM difficulty and category labels over the local OpenAI-compatible test server
(a real separate process, constrained JSON), resume and cache, backend errors retried; semantic dedup with
the bundled all-MiniLM-L6-v2 and the transformers backend with the embedded model (slow); notebook 00
through papermill (slow)."""
import json

import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from test_llm import running_server

from promedical.corpus.config import DataConfig
from promedical.corpus.funnel import explain
from promedical.corpus.ingest import ingest
from promedical.corpus.label import CATEGORIES, SPECIALTIES, read_results
from promedical.corpus.step import curate, step_data
from promedical.corpus.store import read_instructions

SHAREGPT = str(ROOT / "data" / "samples" / "sharegpt_sample.jsonl")
MEDQA = str(ROOT / "data" / "samples" / "medqa_sample.csv")
NO_EMB = dict(semantic_dedup=False, decontam_embeddings=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server("corpus", [], tmp_path_factory.mktemp("server")) as s:
        yield s


@pytest.mark.subprocess
def test_label_stages_over_openai_constrained_resumed_and_cached(server, tmp_path):
    ingest([SHAREGPT, MEDQA], tmp_path)
    server.reset()
    cfg = DataConfig(**NO_EMB, backend="openai", base_url=f"{server.root}/v1", model="tiny-qwen3",
                     label_chunk=4)
    funnel = curate(tmp_path, cfg, progress=False)
    names = [s["stage"] for s in funnel["stages"]]
    assert names == ["ingest", "exact_dedup", "near_dedup", "difficulty", "classify", "split", "decontaminate"]
    difficulty = read_results(tmp_path / "data" / "labels" / "difficulty.jsonl")
    assert len(difficulty) == 9  # one per row that survived dedup
    assert sum(r["status"] == "ok" for r in difficulty.values()) >= 3, difficulty  # a random tiny model: some truncate
    curated = {r["id"]: r for r in pq.read_table(tmp_path / "data" / "curated.parquet").to_pylist()}
    for item_id, rec in difficulty.items():
        row = curated[item_id]
        if rec["status"] == "ok":  # constrained output parses: an integer 0-10 and a reason
            assert 0 <= rec["difficulty"] <= 10 and row["difficulty"] == rec["difficulty"]
            assert row["kept"] == (5 <= rec["difficulty"] <= 9)
            if not row["kept"]:
                assert row["stage"] == "difficulty" and row["reason"].startswith(f"difficulty {rec['difficulty']} outside")
        else:
            assert rec["status"] == "failed" and not row["kept"] and row["reason"].startswith("difficulty unknown")
    kept = [r for r in curated.values() if r["kept"]]
    classify = read_results(tmp_path / "data" / "labels" / "classify.jsonl")
    assert set(classify) == {r["id"] for r in kept}
    for r in kept:
        if classify[r["id"]]["status"] == "ok":
            assert r["category"] in CATEGORIES and r["specialty"] in SPECIALTIES and r["label_source"] == "llm"
    requests = server.stats()["requests"]
    assert requests == 9 + len(kept)
    # the request body was constrained by the label schema
    body = server.stats()["last_body"]
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["category", "specialty"]
    # a second run asks nothing: finished ids are skipped (and the cache would answer anyway)
    again = curate(tmp_path, cfg, progress=False)
    assert server.stats()["requests"] == requests
    assert again["stages"] == funnel["stages"]


@pytest.mark.subprocess
def test_backend_errors_are_recorded_and_retried_on_resume(server, tmp_path):
    ingest([SHAREGPT], tmp_path)
    dead = DataConfig(**NO_EMB, backend="openai", base_url="http://127.0.0.1:9/v1", model="tiny-qwen3",
                      classify=False, max_new_tokens=48)
    from promedical.models.llm import make_llm

    llm = make_llm("openai", "tiny-qwen3", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=2)
    curate(tmp_path, dead, progress=False, llm=llm)
    gone = explain(tmp_path, "sharegpt_sample:sg-001")
    assert gone["stage"] == "difficulty" and "backend error" in gone["reason"] and gone["reason"].endswith("re-run curate to retry")
    assert {r["status"] for r in read_results(tmp_path / "data" / "labels" / "difficulty.jsonl").values()} == {"error"}
    live = DataConfig(**{**dead.to_dict(), "base_url": f"{server.root}/v1", "difficulty_band": [0, 10]})
    curate(tmp_path, live, progress=False)
    results = read_results(tmp_path / "data" / "labels" / "difficulty.jsonl")
    assert {r["status"] for r in results.values()} <= {"ok", "failed"}
    ok = [i for i, r in results.items() if r["status"] == "ok"]
    assert ok and all(explain(tmp_path, i)["kept"] for i in ok)  # band 0-10 keeps every rated row


@pytest.mark.model
def test_semantic_dedup_and_embedded_model_labels(tmp_path):
    """MiniLM drops the paraphrase sg-006 (cosine >= 0.9, trigram Jaccard < 0.5); the embedded model
    rates and classifies through the transformers backend with xgrammar-constrained JSON."""
    funnel = step_data(tmp_path, sources=[SHAREGPT, MEDQA], difficulty_band=[0, 10], label_chunk=8,
                       max_new_tokens=64, progress=False)
    gone = explain(tmp_path, "sharegpt_sample:sg-006")
    assert gone["stage"] == "semantic_dedup" and gone["duplicate_of"] == "sharegpt_sample:sg-001"
    assert gone["score"] >= 0.9 and "MiniLM cosine" in gone["reason"]
    semantic = next(s for s in funnel["stages"] if s["stage"] == "semantic_dedup")
    assert (semantic["in"], semantic["out"]) == (9, 8)
    rows = read_instructions(tmp_path, None)
    results = read_results(tmp_path / "data" / "labels" / "difficulty.jsonl")
    assert len(results) == 8 and all(r["status"] in ("ok", "failed") for r in results.values())
    assert all(0 <= r["difficulty"] <= 10 for r in rows)  # every kept row has a rating (band 0-10 keeps all rated)
    assert funnel["ingest"]["added"] == 14
    audit = json.loads((tmp_path / "data" / "split_audit.json").read_text())
    assert audit["embeddings"] is True and audit["verdict"] == "independent"


@pytest.mark.notebook
def test_notebook_00_runs_through_papermill(tmp_path):
    from promedical.app.notebooks import run_notebook

    ws = tmp_path / "ws"
    out = run_notebook("00", ws, {"sources": [SHAREGPT, MEDQA], "difficulty": False, "classify": False},
                       timeout=900)
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    plots = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plots) == 1 and plots[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]["type"] == "funnel"
    funnel = json.loads((ws / "data" / "funnel.json").read_text())
    assert [s["stage"] for s in funnel["stages"]] == ["ingest", "exact_dedup", "near_dedup", "semantic_dedup", "split",
                                                      "decontaminate"]
    assert funnel["train"] + funnel["bench"] == 8
    assert (ws / "data" / "README.md").read_text().startswith("---\n")

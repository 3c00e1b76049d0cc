"""Step 00 at scale: the streamed, sorted-band MinHash stage against a brute-force reference, the ANN
semantic stage against exact search, the static embedder's calibration against MiniLM, and the funnels
of the samples and the demo corpus unchanged on both embedders (speed and memory: benchmarks/curation.py)."""
from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from promedical.corpus.config import DataConfig
from promedical.corpus.dedup import AnnIndex, jaccard, near_duplicates, semantic_duplicates, shingles
from promedical.corpus.ingest import ingest
from promedical.corpus.split import split_audit
from promedical.corpus.step import curate

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [str(ROOT / "data" / "samples" / "sharegpt_sample.jsonl"), str(ROOT / "data" / "samples" / "medqa_sample.csv")]
DEMO = [str(ROOT / "data" / "train" / "rubrics.jsonl"), str(ROOT / "data" / "bench" / "rubrics.jsonl")]
NO_LLM = dict(difficulty=False, classify=False)


def _old_shingles(text: str, n: int = 3) -> np.ndarray:
    """The character loop the kit used before (the definition the fast version must keep)."""
    words = "".join(ch.lower() if ch.isalnum() else " " for ch in text).split()
    grams = {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}
    return np.unique(np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64, count=len(grams)))


@pytest.mark.parametrize("text", ["Fever 39.2°C in a 3-year-old — ibuprofen_or paracetamol?", "İstanbul ÇOCUK ateş",
                                  "snake_case and CamelCase", "   ", "one", "ﬁnal ½ dose ²", "Ωmega-3 vs ω-6 (mg/kg)"])
def test_fast_shingles_keep_the_old_definition(text):
    assert shingles(text).tolist() == _old_shingles(text).tolist()


def _planted(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{k}" for k in range(3000)]
    texts: list[str] = []
    for _ in range(n):
        if texts and rng.random() < 0.2:  # a copy with 1-6 words replaced: Jaccard from ~0.9 down to ~0.4
            words = rng.choice(texts).split()
            for _ in range(rng.randint(1, 6)):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choices(vocab, k=rng.randint(20, 40))))
    return texts


def _brute_force_near(texts, threshold, skip=frozenset()):
    sh = [shingles(t) for t in texts]
    kept, out = [], {}
    for i in range(len(texts)):
        if i in skip:
            continue
        best = max(((jaccard(sh[j], sh[i]), -j) for j in kept), default=(0.0, 0))
        if best[0] >= threshold:
            out[i] = (-best[1], round(best[0], 4))
        else:
            kept.append(i)
    return out


def test_near_duplicates_match_brute_force_greedy_and_stream_in_batches():
    texts = _planted(1500)
    skip = {3, 50, 700}
    truth = _brute_force_near(texts, 0.5, skip)
    got = near_duplicates(texts, threshold=0.5, skip=skip)
    assert len(truth) > 150
    # never a false drop (every drop is verified by the exact Jaccard against an earlier kept row) ...
    for i, (j, s) in got.items():
        assert j < i and j not in got and j not in skip and s >= 0.5
        assert s == pytest.approx(jaccard(shingles(texts[i]), shingles(texts[j])), abs=1e-4)
    # ... and the LSH finds (almost) every pair the brute force does: all at Jaccard >= 0.6
    strong = {i for i, (_, s) in truth.items() if s >= 0.6}
    assert strong <= set(got)
    assert len(set(got) & set(truth)) >= 0.97 * len(truth)
    # the same result from a stream of batches
    batches = [texts[k:k + 256] for k in range(0, len(texts), 256)]
    assert near_duplicates(iter(batches), threshold=0.5, skip=skip) == got


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_ann_semantic_stage_agrees_with_exact_search_on_anisotropic_vectors():
    rng = np.random.default_rng(0)
    common = rng.normal(size=64)
    base = _unit(rng.normal(size=(6000, 64)) + 2.5 * common)  # a shared direction, as static embeddings have
    src = rng.integers(0, 5000, size=600)
    copies = _unit(base[src] + rng.normal(scale=0.02, size=(600, 64)))
    emb = np.concatenate([base[:5000], copies, base[5000:]])
    exact = semantic_duplicates(emb, threshold=0.95, index="exact")
    held = []
    ann = semantic_duplicates(iter([emb[k:k + 2000] for k in range(0, len(emb), 2000)]), threshold=0.95, index="ann",
                              keep_index=held)
    assert len(exact) > 500
    assert len(set(exact) & set(ann)) >= 0.99 * len(exact)  # recall of the ANN search against exact
    for i, (j, s) in ann.items():  # scores are true cosines, not the index's int8 approximation
        assert s == pytest.approx(float(emb[i] @ emb[j]), abs=2e-3)
    index = held[0]
    assert isinstance(index, AnnIndex) and len(index) == len(emb) - len(ann)


def test_split_audit_reads_streams():
    train = ["what dose of ibuprofen for a child of four", "how long does a cold last", "is a rash with fever serious"]
    bench = ["what dose of ibuprofen for a child of four years", "can I fly when pregnant"]
    audit = split_audit(["t1", "t2", "t3"], iter([train[:2], train[2:]]), ["b1", "b2"], iter(bench))
    assert [(f["id"], f["kind"], f["train_id"]) for f in audit["flagged"]] == [("b1", "ngram", "t1")]
    assert audit["counts"]["template"] == 1 and audit["train_items"] == 3


def test_config_refuses_unknown_embedder_and_bad_static_threshold():
    with pytest.raises(ValueError, match="parameter embedder: must be one of auto, minilm, static"):
        DataConfig(embedder="e5")
    with pytest.raises(ValueError, match="parameter static_threshold"):
        DataConfig(static_threshold=1.5)


@pytest.mark.model
def test_static_threshold_is_calibrated_against_minilm():
    """Recall and precision >= 0.95 against MiniLM fp32 cosine >= 0.9 on the calibration pairs."""
    from promedical.corpus.embeddings import STATIC_THRESHOLD, minilm_embed, static_embed

    pairs = [json.loads(line) for line in (ROOT / "data" / "calibration" / "semantic_pairs.jsonl").read_text().splitlines()]
    a, b = [p["a"] for p in pairs], [p["b"] for p in pairs]
    truth = (minilm_embed(a) * minilm_embed(b)).sum(1) >= 0.9
    pred = (static_embed(a) * static_embed(b)).sum(1) >= STATIC_THRESHOLD
    tp = int((truth & pred).sum())
    assert truth.sum() >= 60 and (~truth).sum() >= 60  # both sides of the boundary are there
    assert tp / truth.sum() >= 0.95 and tp / pred.sum() >= 0.95


@pytest.mark.model
@pytest.mark.parametrize("embedder", ["minilm", "static"])
def test_sample_and_demo_funnels_are_the_same_on_both_embedders(tmp_path, embedder):
    ingest(SAMPLES, tmp_path / "samples")
    funnel = curate(tmp_path / "samples", DataConfig(**NO_LLM, embedder=embedder), progress=False)
    assert [(s["stage"], s["in"], s["out"]) for s in funnel["stages"]] == [
        ("ingest", 23, 14), ("exact_dedup", 14, 11), ("near_dedup", 11, 9), ("semantic_dedup", 9, 8), ("split", 8, 8),
        ("decontaminate", 8, 8)]
    assert funnel["embedder"] == ("MiniLM" if embedder == "minilm" else "static")
    rows = pq.read_table(tmp_path / "samples" / "data" / "curated.parquet").to_pylist()
    gone = next(r for r in rows if r["stage"] == "semantic_dedup")
    assert gone["duplicate_of"] == "sharegpt_sample:sg-001"
    ingest(DEMO, tmp_path / "demo")
    funnel = curate(tmp_path / "demo", DataConfig(**NO_LLM, embedder=embedder, bench_sources=[DEMO[1]]), progress=False)
    assert [(s["stage"], s["out"]) for s in funnel["stages"]] == [
        ("ingest", 90), ("exact_dedup", 90), ("near_dedup", 90), ("semantic_dedup", 90), ("split", 90),
        ("decontaminate", 90)]
    assert (funnel["train"], funnel["bench"], funnel["audit_verdict"]) == (60, 30, "independent")


@pytest.mark.model
def test_static_decontamination_searches_from_the_bench_side_until_the_audit_is_clean(tmp_path):
    """Semantic dedup off, embeddings on: the loose copies that straddle train and bench are dropped from
    train by the embedding pass (the ANN path), and the audit, searching the same way, finds none left."""
    from promedical.core.audit import embedding_model_dir

    vocab = [w for w in (embedding_model_dir() / "vocab.txt").read_text().split() if w.isalpha() and len(w) > 3][:8000]
    rng = random.Random(1)
    rows = []
    for k in range(1500):
        if k >= 300 and k % 5 == 0:  # a loose copy: 15% of the words dropped, neighbours swapped (Jaccard < 0.5)
            words = [w for w in rows[rng.randrange(300)]["prompt"].split() if rng.random() > 0.15]
            for _ in range(len(words) // 4):
                i = rng.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
            rows.append({"id": f"r{k}", "prompt": " ".join(words)})
        else:
            rows.append({"id": f"r{k}", "prompt": " ".join(rng.choices(vocab, k=40))})
    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest([str(src)], tmp_path / "ws")
    funnel = curate(tmp_path / "ws", DataConfig(**NO_LLM, embedder="static", semantic_dedup=False), progress=False)
    assert funnel["dropped_by_stage"].get("decontaminate", 0) >= 20
    audit = json.loads((tmp_path / "ws" / "data" / "split_audit.json").read_text())
    assert audit["verdict"] == "independent" and audit["embedder"] == "static"
    assert audit["bench_vs_train_pass"].startswith("embedding check only")

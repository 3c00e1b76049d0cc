"""Step 00 end to end: ingest (optional), the curation funnel, the split and the funnel's artefacts.

Stages in order, each switchable in ``DataConfig``: exact_dedup -> near_dedup -> semantic_dedup ->
difficulty -> classify -> split -> decontaminate (bench vs train, then outside benchmarks). A dropped
row keeps its stage, reason, the id it duplicates and the score (``promedical curate --explain ID``).
"""
from __future__ import annotations

import secrets
import time
from collections import Counter

import numpy as np

from promedical.core.audit import THRESHOLDS
from promedical.core.config import build
from promedical.core.provenance import stamp
from promedical.core.workspace import Workspace
from promedical.corpus.config import DataConfig
from promedical.corpus.dedup import exact_duplicates, near_duplicates
from promedical.corpus.embeddings import embedder_for
from promedical.corpus.funnel import Fates, write_outputs
from promedical.corpus.ingest import ingest, iter_rows, read_rejects
from promedical.corpus.label import label, load_taxonomy
from promedical.corpus.readers import expand_source
from promedical.corpus.split import contamination, split_audit, stratified_bench
from promedical.corpus.store import data_dir, iter_batches, writer_lock
from promedical.corpus.vectors import Vectors

UNLABELLED = "unlabelled"


class Funnel:
    """Row fates and per-stage counts, column-wise: a kept flag a row, and (stage, reason, duplicate_of,
    score) for the dropped rows only, so a million rows cost a few megabytes."""

    def __init__(self, source_codes: np.ndarray, source_names: list[str]):
        self.kept = np.ones(len(source_codes), dtype=bool)
        self.fate: dict[int, tuple] = {}
        self.codes, self.names = source_codes, source_names
        self.stages: list[dict] = []
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def alive(self) -> np.ndarray:
        return np.flatnonzero(self.kept)

    def drop(self, i: int, stage: str, reason: str, duplicate_of: str | None = None, score: float | None = None):
        self.kept[i] = False
        self.fate[int(i)] = (stage, reason, duplicate_of, score)

    def by_source(self, rows: np.ndarray) -> dict[str, int]:
        counts = np.bincount(self.codes[rows], minlength=len(self.names))
        return dict(sorted((self.names[k], int(c)) for k, c in enumerate(counts) if c))

    def record(self, stage: str, n_in: int) -> None:
        alive = self.alive()
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._t, 3)
        self._t = now
        self.stages.append({"stage": stage, "in": n_in, "out": len(alive), "by_source": self.by_source(alive)})


def _label_llm(config: DataConfig, ws: Workspace):
    from promedical.models.llm import make_llm

    kwargs = {"concurrency": config.concurrency} if config.backend == "openai" else {}
    return make_llm(config.backend, config.model, base_url=config.base_url, cache_dir=ws.llm_cache, **kwargs)


def check_inputs(config: DataConfig, workspace=None) -> dict:
    """Every file the funnel will read, checked before anything runs (no LLM label spent on a run that
    would stop at its last stage): the sources, the outside benchmarks and the taxonomy. Returns the
    taxonomy; ValueError naming the first bad input."""
    home = Workspace.folder(workspace) if workspace is not None else None
    for spec in config.sources:
        expand_source(spec, exclude=home)
    for spec in config.decontaminate:
        try:
            expand_source(spec)
        except ValueError as exc:
            raise ValueError(f"decontaminate: {exc}") from None
    return load_taxonomy(config.taxonomy)


def curate(workspace, config: DataConfig | None = None, *, progress: bool = True, llm=None) -> dict:
    """Run the funnel over ``W/data/instructions.parquet``; write curated/train/bench tables, funnel.json,
    split_audit.json and the dataset card, as one curation (``store.check_curation``). ``llm`` overrides the
    backend built from the config. Inputs are checked first; one writer at a time (``store.writer_lock``)."""
    config = config or DataConfig()
    ws = Workspace.of(workspace)
    taxonomy = check_inputs(config)
    with writer_lock(ws):
        return _curate(ws, config, taxonomy, progress, llm)


def _texts(path, rows: np.ndarray | None = None, batch_size: int = 10_000):
    """The ``text`` column in batches (lists), all rows or only ``rows`` (ascending positions)."""
    start = 0
    for batch in iter_batches(path, ["text"], batch_size):
        texts = batch.column(0).to_pylist()
        if rows is None:
            yield texts
        else:
            lo, hi = np.searchsorted(rows, [start, start + len(texts)])
            if hi > lo:
                yield [texts[i - start] for i in rows[lo:hi]]
        start += len(texts)


def _curate(ws: Workspace, config: DataConfig, taxonomy: dict, progress: bool, llm) -> dict:
    import pyarrow.parquet as pq

    d = data_dir(ws)
    path = d / "instructions.parquet"
    n = pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0
    if n == 0:
        raise ValueError(f"{d / 'instructions.parquet'}: no instructions; run `promedical ingest SOURCE --workspace {ws}` first")
    light = pq.read_table(path, columns=["id", "source", "path", "category", "specialty"], page_checksum_verification=True)
    ids = light["id"].to_pylist()
    source_col = light["source"].dictionary_encode().combine_chunks()
    source_names = source_col.dictionary.to_pylist()
    codes = source_col.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    paths = light["path"].to_pylist() if config.bench_sources else None
    category, specialty = light["category"].to_pylist(), light["specialty"].to_pylist()
    del light, source_col
    rejects = read_rejects(ws)
    f = Funnel(codes, source_names)
    f.stages.append({"stage": "ingest", "in": n + len(rejects), "out": n, "by_source": f.by_source(np.arange(n))})

    if config.exact_dedup:
        n_in = len(f.alive())
        for i, (j, s) in exact_duplicates(_texts(path)).items():
            f.drop(i, "exact_dedup", f"exact duplicate of {ids[j]} (same normalised text)", ids[j], s)
        f.record("exact_dedup", n_in)
    if config.near_dedup:
        n_in = len(f.alive())
        dead = set(np.flatnonzero(~f.kept).tolist())
        for i, (j, s) in near_duplicates(_texts(path), threshold=config.near_threshold, num_perm=config.num_perm,
                                         skip=dead).items():
            f.drop(i, "near_dedup", f"near duplicate of {ids[j]} (word-trigram Jaccard {s:.3f} >= "
                                    f"{config.near_threshold})", ids[j], s)
        f.record("near_dedup", n_in)
    vectors: Vectors | None = None
    embedder = embedder_for(len(f.alive()), config.embedder)
    if config.semantic_dedup:
        alive = f.alive()
        vectors = Vectors(embedder, alive, config)
        threshold = vectors.threshold
        for a, (b, s) in vectors.dedup(_texts(path, alive)).items():
            i, j = alive[a], alive[b]
            f.drop(i, "semantic_dedup", f"semantic duplicate of {ids[j]} ({vectors.model_name} cosine {s:.3f} >= "
                                        f"{threshold})", ids[j], s)
        f.record("semantic_dedup", len(alive))

    labels_dir = d / "labels"
    if config.difficulty or config.classify:
        llm = llm or _label_llm(config, ws)
    difficulty: dict[int, tuple[int, str]] = {}
    llm_labelled: set[int] = set()
    if config.difficulty:
        alive = f.alive()
        lo, hi = config.difficulty_band
        texts = [t for batch in _texts(path, alive) for t in batch]
        res = label([(ids[i], t) for i, t in zip(alive, texts)], llm, labels_dir / "difficulty.jsonl", kind="difficulty",
                    max_new_tokens=config.max_new_tokens, chunk=config.label_chunk, progress=progress)
        for i in alive:
            rec = res.get(ids[i], {})
            if rec.get("status") == "ok":
                difficulty[int(i)] = (rec["difficulty"], rec["reason"])
                if not lo <= rec["difficulty"] <= hi:
                    f.drop(i, "difficulty", f"difficulty {rec['difficulty']} outside the kept band {lo}-{hi} "
                                            f"({rec['reason']})", None, float(rec["difficulty"]))
            elif not config.keep_unrated:
                why = rec.get("error", "no answer")
                f.drop(i, "difficulty", f"difficulty unknown: {why}" + ("; re-run curate to retry"
                                                                        if rec.get("status") == "error" else ""))
        f.record("difficulty", len(alive))
    if config.classify:
        alive = f.alive()
        need = np.asarray([i for i in alive if not (category[i] in taxonomy["categories"]
                                                    and specialty[i] in taxonomy["specialties"])], dtype=np.int64)
        texts = [t for batch in _texts(path, need) for t in batch]
        res = label([(ids[i], t) for i, t in zip(need, texts)], llm, labels_dir / "classify.jsonl", kind="classify",
                    taxonomy=taxonomy, max_new_tokens=config.max_new_tokens, chunk=config.label_chunk, progress=progress)
        for i in need:
            rec = res.get(ids[i], {})
            if rec.get("status") == "ok":
                category[i], specialty[i] = rec["category"], rec["specialty"]
                llm_labelled.add(int(i))
        f.record("classify", len(alive))

    alive = f.alive()
    strata = [category[i] or UNLABELLED for i in alive]
    if config.bench_sources:  # a fixed bench: the rows of these sources
        fixed = set(config.bench_sources)
        is_bench = np.asarray([source_names[codes[i]] in fixed or paths[i] in fixed for i in alive], dtype=bool)
    else:
        is_bench = stratified_bench([ids[i] for i in alive], strata, fraction=config.bench_fraction,
                                    size=config.bench_size, seed=config.seed)
    bench_mask = np.zeros(n, dtype=bool)
    bench_mask[alive[is_bench]] = True
    f.record("split", len(alive))

    # decontaminate: train vs bench, then train vs outside benchmarks
    n_in = len(alive)
    need_emb = config.decontam_embeddings
    if need_emb and vectors is None:
        vectors = Vectors(embedder, alive, config)
        vectors.embed_only(_texts(path, alive))
    train = alive[~is_bench]
    bench = alive[is_bench]
    t = THRESHOLDS
    # The dedup stages already compared every kept pair with the same MinHash signatures and LSH bands
    # (and exact cosines): with the audit's thresholds they leave no bench/train near duplicate to find.
    # An approximate (ANN) semantic stage may miss a few pairs: then the embedding check runs again here.
    ngram_covered = config.exact_dedup and config.near_dedup and config.near_threshold == t["ngram_jaccard"]
    emb_covered = not need_emb or (config.semantic_dedup and vectors.exact
                                   and config.semantic_threshold <= t["embedding_cosine"])
    covered = ngram_covered and emb_covered
    if len(train) and len(bench) and not covered:
        if ngram_covered:  # the embedding check only, searched from the bench side as the audit searches
            hits = {}
            ask = np.arange(len(bench))
            while len(ask):  # a bench item may have several train near duplicates: ask again until none is left
                left = train[f.kept[train]]
                scores, args = vectors.best_among(bench, left)(ask)
                found = np.flatnonzero(scores >= vectors.audit_threshold)
                ask, scores, args = ask[found], scores[found], args[found]
                for b, score, arg in zip(ask, scores, args):
                    j = left[arg]
                    if f.kept[j]:
                        score = round(min(float(score), 1.0), 4)
                        f.drop(j, "decontaminate", f"near duplicate of bench item {ids[bench[b]]} (embedding {score:.3f})",
                               ids[bench[b]], score)
        else:
            hits = contamination(_texts(path, train), _texts(path, bench),
                                 cosine_best=vectors.best_among(train, bench) if need_emb else None,
                                 ngram_threshold=t["ngram_jaccard"], cosine_threshold=vectors.audit_threshold
                                 if need_emb else t["embedding_cosine"], num_perm=config.num_perm)
        for a, h in hits.items():  # (the embedding-only pass dropped its rows as it went)
            j = bench[h["match"]]
            f.drop(train[a], "decontaminate", f"near duplicate of bench item {ids[j]} ({h['kind']} {h['score']:.3f})",
                   ids[j], h["score"])
    outside_sources = []
    for spec in config.decontaminate:
        out_rows = [rec for rec, _ in iter_rows(spec, max_chars=10 ** 9) if rec is not None]
        outside_sources.append({"source": spec, "items": len(out_rows)})
        train = train[f.kept[train]]
        if not out_rows or not len(train):
            continue
        hits = contamination(_texts(path, train), [r["text"] for r in out_rows],
                             cosine_best=vectors.best_against(train, [r["text"] for r in out_rows]) if need_emb else None,
                             ngram_threshold=t["ngram_jaccard"], cosine_threshold=vectors.audit_threshold if need_emb
                             else t["embedding_cosine"], num_perm=config.num_perm)
        for a, h in hits.items():
            o = out_rows[h["match"]]
            f.drop(train[a], "decontaminate", f"near duplicate of outside benchmark {spec} item {o['original_id'] or o['id']} "
                                              f"({h['kind']} {h['score']:.3f})", o["id"], h["score"])
    f.record("decontaminate", n_in)

    train = f.alive()[~bench_mask[f.alive()]]
    bench = f.alive()[bench_mask[f.alive()]]
    audit = split_audit([ids[i] for i in train], _texts(path, train), [ids[i] for i in bench], _texts(path, bench),
                        cosine_best=vectors.best_among(bench, train) if need_emb else None,
                        cosine_threshold=vectors.audit_threshold if need_emb else t["embedding_cosine"],
                        num_perm=config.num_perm)
    audit["embedder"] = vectors.model_name if need_emb else None
    audit["outside_benchmarks"] = outside_sources
    audit["bench_vs_train_pass"] = ("skipped: the dedup stages ran with the audit's thresholds" if covered else
                                    "embedding check only (the semantic stage's search is approximate)"
                                    if ngram_covered else "run")
    curation = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    audit["curation"] = curation

    split_of = np.full(n, None, dtype=object)
    split_of[train], split_of[bench] = "train", "bench"
    by_category: dict[str, dict] = {}
    for i in f.alive():
        c = category[i] or UNLABELLED
        by_category.setdefault(c, {"train": 0, "bench": 0})[split_of[i]] += 1
    ingested = np.bincount(codes, minlength=len(source_names))
    kept = np.bincount(codes[f.alive()], minlength=len(source_names))
    funnel = {"stages": f.stages, "seconds": f.seconds, "train": len(train), "bench": len(bench),
              "by_category": dict(sorted(by_category.items())),
              "by_source": {s: {"ingested": int(ingested[k]), "kept": int(kept[k])}
                            for k, s in sorted(enumerate(source_names), key=lambda x: x[1])},
              "dropped_by_stage": dict(Counter(fate[0] for fate in f.fate.values())),
              "rejected_at_ingest": len(rejects), "audit_verdict": audit["verdict"],
              "embedder": vectors.model_name if vectors is not None else None,
              "config": config.to_dict(), "taxonomy": taxonomy,
              "provenance": stamp(config=config.to_dict(), seed=config.seed), "curation": curation}
    fates = Fates(kept=f.kept, fate=f.fate, split=split_of, category=category, specialty=specialty,
                  difficulty=difficulty, llm_labelled=llm_labelled)
    write_outputs(ws, path, fates, funnel, audit)  # funnel.json last: it names the finished curation
    return funnel


def step_data(workspace=None, config: DataConfig | None = None, *, progress: bool = True, llm=None, **params) -> dict:
    """00: ingest ``sources`` (when given) and curate; ``config`` and/or ``params`` give the ``DataConfig``."""
    config = build(DataConfig, config, params)
    ws = Workspace.of(workspace)
    check_inputs(config, ws)  # before the ingest writes anything
    ingested = None
    if config.sources:
        ingested = ingest(config.sources, ws, columns=config.columns, max_chars=config.max_chars)
    funnel = curate(ws, config, progress=progress, llm=llm)
    if ingested is not None:
        funnel["ingest"] = {k: v for k, v in ingested.items() if k != "problems"}
        funnel["ingest"]["problems"] = ingested["problems"][:200]
    return funnel

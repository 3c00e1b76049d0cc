"""Step 00 end to end: ingest (optional), the curation funnel, the split and the funnel's artefacts.

Stages in order, each switchable in ``DataConfig``: exact_dedup -> near_dedup -> semantic_dedup ->
difficulty -> classify -> split -> decontaminate (bench vs train, then outside benchmarks). A dropped
row keeps its stage, reason, the id it duplicates and the score (``promedical curate --explain ID``).
"""
from __future__ import annotations

import secrets
import time
from collections import Counter

from promedical.core.audit import THRESHOLDS
from promedical.core.config import build
from promedical.core.provenance import stamp
from promedical.core.workspace import Workspace
from promedical.corpus.config import DataConfig
from promedical.corpus.dedup import embed_texts, exact_duplicates, near_duplicates, semantic_duplicates
from promedical.corpus.funnel import HEAVY_COLUMNS, write_outputs
from promedical.corpus.ingest import ingest, iter_rows, read_rejects
from promedical.corpus.label import label, load_taxonomy
from promedical.corpus.readers import expand_source
from promedical.corpus.split import contamination, split_audit, stratified_split
from promedical.corpus.store import data_dir, open_table, writer_lock

UNLABELLED = "unlabelled"


class Funnel:
    """Row fates and per-stage counts."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        for r in rows:
            r.update(kept=True, stage=None, reason=None, duplicate_of=None, score=None)
        self.stages: list[dict] = []
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def alive(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r["kept"]]

    def drop(self, i: int, stage: str, reason: str, duplicate_of: str | None = None, score: float | None = None):
        self.rows[i].update(kept=False, stage=stage, reason=reason, duplicate_of=duplicate_of, score=score)

    def record(self, stage: str, n_in: int, subset: list[int] | None = None) -> None:
        alive = self.alive() if subset is None else subset
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._t, 2)
        self._t = now
        self.stages.append({"stage": stage, "in": n_in, "out": len(alive),
                            "by_source": dict(sorted(Counter(self.rows[i]["source"] for i in alive).items()))})


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


def _curate(ws: Workspace, config: DataConfig, taxonomy: dict, progress: bool, llm) -> dict:
    import numpy as np

    d = data_dir(ws)
    path = d / "instructions.parquet"
    table = open_table(path) if path.is_file() else None
    if table is None or table.num_rows == 0:
        raise ValueError(f"{d / 'instructions.parquet'}: no instructions; run `promedical ingest SOURCE --workspace {ws}` first")
    rows = table.select([c for c in table.column_names if c not in HEAVY_COLUMNS]).to_pylist()  # light fields
    texts = table["text"].to_pylist()
    rejects = read_rejects(ws)
    f = Funnel(rows)
    f.stages.append({"stage": "ingest", "in": len(rows) + len(rejects), "out": len(rows),
                     "by_source": dict(sorted(Counter(r["source"] for r in rows).items()))})

    if config.exact_dedup:
        n_in = len(f.alive())
        for i, (j, s) in exact_duplicates(texts).items():
            f.drop(i, "exact_dedup", f"exact duplicate of {rows[j]['id']} (same normalised text)", rows[j]["id"], s)
        f.record("exact_dedup", n_in)
    if config.near_dedup:
        alive = f.alive()
        dead = set(range(len(rows))) - set(alive)
        for i, (j, s) in near_duplicates(texts, threshold=config.near_threshold, num_perm=config.num_perm, skip=dead).items():
            f.drop(i, "near_dedup", f"near duplicate of {rows[j]['id']} (word-trigram Jaccard {s:.3f} >= "
                                    f"{config.near_threshold})", rows[j]["id"], s)
        f.record("near_dedup", len(alive))
    embeddings: np.ndarray | None = None
    embedded: list[int] = []
    if config.semantic_dedup:
        alive = f.alive()
        embedded = alive
        embeddings = embed_texts([texts[i] for i in alive], batch_size=config.embed_batch_size)
        for a, (b, s) in semantic_duplicates(embeddings, threshold=config.semantic_threshold).items():
            i, j = alive[a], alive[b]
            f.drop(i, "semantic_dedup", f"semantic duplicate of {rows[j]['id']} (MiniLM cosine {s:.3f} >= "
                                        f"{config.semantic_threshold})", rows[j]["id"], s)
        f.record("semantic_dedup", len(alive))

    labels_dir = d / "labels"
    if config.difficulty or config.classify:
        llm = llm or _label_llm(config, ws)
    for r in rows:
        r.update(difficulty=None, difficulty_reason=None, label_source="source" if r.get("category") else None)
    if config.difficulty:
        alive = f.alive()
        lo, hi = config.difficulty_band
        res = label([(rows[i]["id"], texts[i]) for i in alive], llm, labels_dir / "difficulty.jsonl", kind="difficulty",
                    max_new_tokens=config.max_new_tokens, chunk=config.label_chunk, progress=progress)
        for i in alive:
            rec = res.get(rows[i]["id"], {})
            if rec.get("status") == "ok":
                rows[i].update(difficulty=rec["difficulty"], difficulty_reason=rec["reason"])
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
        need = [i for i in alive if not (rows[i].get("category") in taxonomy["categories"]
                                          and rows[i].get("specialty") in taxonomy["specialties"])]
        res = label([(rows[i]["id"], texts[i]) for i in need], llm, labels_dir / "classify.jsonl", kind="classify",
                    taxonomy=taxonomy, max_new_tokens=config.max_new_tokens, chunk=config.label_chunk, progress=progress)
        for i in need:
            rec = res.get(rows[i]["id"], {})
            if rec.get("status") == "ok":
                rows[i].update(category=rec["category"], specialty=rec["specialty"], label_source="llm")
        f.record("classify", len(alive))

    alive = f.alive()
    strata = [rows[i].get("category") or UNLABELLED for i in alive]
    if config.bench_sources:  # a fixed bench: the rows of these sources
        fixed = set(config.bench_sources)
        split = {rows[i]["id"]: "bench" if rows[i]["source"] in fixed or rows[i]["path"] in fixed else "train"
                 for i in alive}
    else:
        split = stratified_split([rows[i]["id"] for i in alive], strata, fraction=config.bench_fraction,
                                 size=config.bench_size, seed=config.seed)
    for i, r in enumerate(rows):
        r["split"] = split.get(r["id"]) if r["kept"] else None
    f.record("split", len(alive))

    # decontaminate: train vs bench, then train vs outside benchmarks
    n_in = len(alive)
    need_emb = config.decontam_embeddings
    emb_of = {}
    if need_emb:
        if embeddings is not None:
            emb_of = {i: embeddings[a] for a, i in enumerate(embedded)}
        missing = [i for i in alive if i not in emb_of]
        if missing:
            vecs = embed_texts([texts[i] for i in missing], batch_size=config.embed_batch_size)
            emb_of.update(zip(missing, vecs))
    train = [i for i in alive if rows[i]["split"] == "train"]
    bench = [i for i in alive if rows[i]["split"] == "bench"]

    def stack(idx):
        return np.stack([emb_of[i] for i in idx]) if idx else np.zeros((0, 384), dtype=np.float32)

    t = THRESHOLDS
    # The dedup stages already compared every kept pair with the same MinHash signatures and LSH bands
    # (and exact cosines): with the audit's thresholds they leave no bench/train near duplicate to find.
    covered = (config.exact_dedup and config.near_dedup and config.near_threshold == t["ngram_jaccard"]
               and (not need_emb or (config.semantic_dedup and config.semantic_threshold <= t["embedding_cosine"])))
    if train and bench and not covered:
        hits = contamination([texts[i] for i in train], [texts[i] for i in bench],
                             embeddings=(stack(train), stack(bench)) if need_emb else None,
                             ngram_threshold=t["ngram_jaccard"], cosine_threshold=t["embedding_cosine"],
                             num_perm=config.num_perm)
        for a, h in hits.items():
            j = bench[h["match"]]
            f.drop(train[a], "decontaminate", f"near duplicate of bench item {rows[j]['id']} ({h['kind']} {h['score']:.3f})",
                   rows[j]["id"], h["score"])
    outside_sources = []
    for spec in config.decontaminate:
        out_rows = [rec for rec, _ in iter_rows(spec, max_chars=10 ** 9) if rec is not None]
        outside_sources.append({"source": spec, "items": len(out_rows)})
        train = [i for i in train if rows[i]["kept"]]
        if not out_rows or not train:
            continue
        out_emb = None
        if need_emb:
            out_emb = (stack(train), embed_texts([r["text"] for r in out_rows], batch_size=config.embed_batch_size))
        hits = contamination([texts[i] for i in train], [r["text"] for r in out_rows], embeddings=out_emb,
                             ngram_threshold=t["ngram_jaccard"], cosine_threshold=t["embedding_cosine"],
                             num_perm=config.num_perm)
        for a, h in hits.items():
            o = out_rows[h["match"]]
            f.drop(train[a], "decontaminate", f"near duplicate of outside benchmark {spec} item {o['original_id'] or o['id']} "
                                              f"({h['kind']} {h['score']:.3f})", o["id"], h["score"])
    for r in rows:
        if not r["kept"]:
            r["split"] = None
    f.record("decontaminate", n_in)

    train = [i for i in f.alive() if rows[i]["split"] == "train"]
    bench = [i for i in f.alive() if rows[i]["split"] == "bench"]
    audit = split_audit([{"id": rows[i]["id"], "text": texts[i]} for i in train],
                        [{"id": rows[i]["id"], "text": texts[i]} for i in bench],
                        embeddings=(stack(bench), stack(train)) if need_emb else None, num_perm=config.num_perm)
    audit["outside_benchmarks"] = outside_sources
    audit["bench_vs_train_pass"] = "skipped: the dedup stages ran with the audit's thresholds" if covered else "run"
    curation = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    audit["curation"] = curation

    by_category = {}
    for i in f.alive():
        c = rows[i].get("category") or UNLABELLED
        by_category.setdefault(c, {"train": 0, "bench": 0})[rows[i]["split"]] += 1
    funnel = {"stages": f.stages, "seconds": f.seconds, "train": len(train), "bench": len(bench),
              "by_category": dict(sorted(by_category.items())),
              "by_source": {s: {"ingested": sum(r["source"] == s for r in rows),
                                "kept": sum(r["source"] == s and r["kept"] for r in rows)}
                            for s in sorted({r["source"] for r in rows})},
              "dropped_by_stage": dict(Counter(r["stage"] for r in rows if not r["kept"])),
              "rejected_at_ingest": len(rejects), "audit_verdict": audit["verdict"],
              "config": config.to_dict(), "taxonomy": taxonomy,
              "provenance": stamp(config=config.to_dict(), seed=config.seed), "curation": curation}
    write_outputs(ws, table, rows, funnel, audit)  # funnel.json last: it names the finished curation
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

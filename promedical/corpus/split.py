"""Train/bench split, stratified by category, and decontamination by the audit's thresholds.

- ``stratified_split``: per category, the ids with the smallest seeded hash go to the bench (so the split
  does not depend on ingestion order, and costs O(n)), the bench share by largest remainder, so the bench
  keeps the corpus's category mix and its size is exactly ``bench_size`` or ``round(fraction * n)``.
- ``contamination``: which rows of one list near-duplicate a row of another: the same normalised
  text, word-trigram Jaccard >= 0.5, or all-MiniLM-L6-v2 cosine >= 0.9 (``audit.THRESHOLDS``).
- ``split_audit``: the independence verdict of a split (the audit's instruction-level checks; the
  criterion check needs rubrics and runs in notebook 05).
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterable, Sequence

import numpy as np

from promedical.core.audit import THRESHOLDS
from promedical.core.text import normalize
from promedical.corpus.dedup import cross_matches


def stratified_bench(ids: Sequence[str], strata: Sequence[str], *, fraction: float = 0.2, size: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """A boolean array: which of ``ids`` are bench. Per stratum, the members with the smallest seeded hash
    (blake2b of the id, keyed by the seed) go to the bench, so the split depends on neither the order nor
    the other rows, and costs O(n) hashing plus a sort of 64-bit keys per stratum."""
    n = len(ids)
    codes: dict[str, int] = {}
    group = np.fromiter((codes.setdefault(s, len(codes)) for s in strata), dtype=np.int64, count=n)
    counts = np.bincount(group, minlength=len(codes))
    names = sorted(codes, key=codes.get)
    total = min(size, n) if size is not None else round(fraction * n)
    quotas = {g: total * int(counts[codes[g]]) / n if n else 0 for g in names}
    take = {g: math.floor(q) for g, q in quotas.items()}
    for g in sorted(names, key=lambda g: (-(quotas[g] - take[g]), g))[:total - sum(take.values())]:
        take[g] += 1
    key = str(seed).encode()
    rank = np.fromiter((int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "big") >> 1
                        for i in ids), dtype=np.int64, count=n)
    bench = np.zeros(n, dtype=bool)
    for g in names:
        members = np.flatnonzero(group == codes[g])
        order = np.argsort(rank[members], kind="stable")  # 63-bit keys: a tie is as good as impossible
        bench[members[order[:take[g]]]] = True
    return bench


def stratified_split(ids: Sequence[str], strata: Sequence[str], *, fraction: float = 0.2, size: int | None = None,
                     seed: int = 0) -> dict[str, str]:
    """{id: "train" | "bench"} (``stratified_bench``)."""
    bench = stratified_bench(ids, strata, fraction=fraction, size=size, seed=seed)
    return {i: "bench" if b else "train" for i, b in zip(ids, bench)}


def contamination(queries: Iterable[str], corpus: Iterable[str], *, embeddings=None, cosine_best=None,
                  ngram_threshold: float = THRESHOLDS["ngram_jaccard"],
                  cosine_threshold: float = THRESHOLDS["embedding_cosine"], num_perm: int = 128) -> dict[int, dict]:
    """{query row: {"match": corpus row, "kind": exact|ngram|embedding, "score"}}; texts as lists or streams."""
    return cross_matches(queries, corpus, threshold=ngram_threshold, num_perm=num_perm, embeddings=embeddings,
                         cosine_threshold=cosine_threshold, cosine_best=cosine_best)


def split_audit(train_ids: Sequence[str], train_texts: Iterable, bench_ids: Sequence[str], bench_texts: Iterable, *,
                embeddings=None, cosine_best=None, cosine_threshold: float = THRESHOLDS["embedding_cosine"],
                num_perm: int = 128) -> dict:
    """Each bench item against the train items: exact / n-gram / embedding near duplicates and template reuse.
    Texts as lists or streams of batches (read once each); ``embeddings`` (bench, train) matrices or
    ``cosine_best`` (see ``dedup.cross_matches``) for the embedding check."""
    t = THRESHOLDS
    templates: set[str] = set()
    bench_templates: list[str] = []

    def remember(texts, into):
        for batch in texts:
            for text in ([batch] if isinstance(batch, str) else batch):
                into(" ".join(normalize(text).split()[:t["template_words"]]))
                yield text

    hits = contamination(remember(bench_texts, bench_templates.append), remember(train_texts, templates.add),
                         embeddings=embeddings, cosine_best=cosine_best, cosine_threshold=cosine_threshold,
                         num_perm=num_perm)
    flagged = [{"id": bench_ids[i], "kind": h["kind"], "score": h["score"], "train_id": train_ids[h["match"]]}
               for i, h in sorted(hits.items())]
    template = sum(b in templates for b in bench_templates)
    counts = {k: sum(f["kind"] == k for f in flagged) for k in ("exact", "ngram", "embedding")}
    return {"thresholds": t, "train_items": len(train_ids), "bench_items": len(bench_ids),
            "embeddings": embeddings is not None or cosine_best is not None,
            "counts": {**counts, "template": template}, "flagged": flagged,
            "verdict": "independent" if not flagged else f"{len(flagged)} of {len(bench_ids)} benchmark items overlap training",
            "note": "template reuse (same first 6 words) is reported, not removed: question banks share openings"}

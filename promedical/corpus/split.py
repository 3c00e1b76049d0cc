"""Train/bench split, stratified by category, and decontamination by the audit's thresholds.

- ``stratified_split``: per category, a seeded shuffle (of the ids in sorted order, so the split does
  not depend on ingestion order) and the bench share by largest remainder, so the bench keeps the
  corpus's category mix and its size is exactly ``bench_size`` or ``round(fraction * n)``.
- ``contamination``: which rows of one list near-duplicate a row of another: the same normalised
  text, word-trigram Jaccard >= 0.5, or all-MiniLM-L6-v2 cosine >= 0.9 (``audit.THRESHOLDS``).
- ``split_audit``: the independence verdict of a split (the audit's instruction-level checks; the
  criterion check needs rubrics and runs in notebook 05).
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Sequence

from promedical.core.audit import THRESHOLDS
from promedical.core.text import normalize
from promedical.corpus.dedup import cross_matches


def stratified_split(ids: Sequence[str], strata: Sequence[str], *, fraction: float = 0.2, size: int | None = None,
                     seed: int = 0) -> dict[str, str]:
    """{id: "train" | "bench"}."""
    groups: dict[str, list[str]] = defaultdict(list)
    for i, s in zip(ids, strata):
        groups[s].append(i)
    n = len(ids)
    total = min(size, n) if size is not None else round(fraction * n)
    quotas = {g: total * len(m) / n if n else 0 for g, m in groups.items()}
    take = {g: math.floor(q) for g, q in quotas.items()}
    for g in sorted(groups, key=lambda g: (-(quotas[g] - take[g]), g))[:total - sum(take.values())]:
        take[g] += 1
    out = {}
    for g in sorted(groups):
        members = sorted(groups[g])
        random.Random(f"{seed}:{g}").shuffle(members)
        for k, i in enumerate(members):
            out[i] = "bench" if k < take[g] else "train"
    return out


def contamination(queries: Sequence[str], corpus: Sequence[str], *, embeddings=None,
                  ngram_threshold: float = THRESHOLDS["ngram_jaccard"],
                  cosine_threshold: float = THRESHOLDS["embedding_cosine"], num_perm: int = 128) -> dict[int, dict]:
    """{query row: {"match": corpus row, "kind": exact|ngram|embedding, "score"}}."""
    return cross_matches(queries, corpus, threshold=ngram_threshold, num_perm=num_perm, embeddings=embeddings,
                         cosine_threshold=cosine_threshold)


def split_audit(train: Sequence[dict], bench: Sequence[dict], *, embeddings=None, num_perm: int = 128) -> dict:
    """Each bench item against the train items: exact / n-gram / embedding near duplicates and template reuse."""
    t = THRESHOLDS
    hits = contamination([b["text"] for b in bench], [r["text"] for r in train], embeddings=embeddings, num_perm=num_perm)
    templates = {" ".join(normalize(r["text"]).split()[:t["template_words"]]) for r in train}
    flagged = [{"id": bench[i]["id"], "kind": h["kind"], "score": h["score"], "train_id": train[h["match"]]["id"]}
               for i, h in sorted(hits.items())]
    template = sum(" ".join(normalize(b["text"]).split()[:t["template_words"]]) in templates for b in bench)
    counts = {k: sum(f["kind"] == k for f in flagged) for k in ("exact", "ngram", "embedding")}
    return {"thresholds": t, "train_items": len(train), "bench_items": len(bench), "embeddings": embeddings is not None,
            "counts": {**counts, "template": template}, "flagged": flagged,
            "verdict": "independent" if not flagged else f"{len(flagged)} of {len(bench)} benchmark items overlap training",
            "note": "template reuse (same first 6 words) is reported, not removed: question banks share openings"}

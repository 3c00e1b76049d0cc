"""Duplicates: exact (normalised hash), near (MinHash LSH with ``datasketch``, verified by the exact
word-trigram Jaccard the audit uses) and semantic (all-MiniLM-L6-v2 cosine, the audit's model).

Each stage walks the rows in order and keeps the first of a group: a later row is dropped as the
duplicate of an earlier *kept* row, and the result names that row and the score. Memory: the MinHash
index (bands of 128 permutations), one sorted array of shingle hashes per kept row and, for the
semantic stage, one float32 vector (384 numbers) per row; compute is linear in rows for exact and
MinHash, and rows x kept rows (blocked matrix products) for the semantic stage.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from typing import Sequence

import numpy as np

from promedical.core.text import normalize

_WORD = re.compile(r"\w+")


def text_hash(text: str) -> str:
    return hashlib.sha1(normalize(text).encode()).hexdigest()


def shingles(text: str, n: int = 3) -> np.ndarray:
    """Sorted unique 32-bit hashes of the word n-grams (``promedical.core.text.word_ngrams``' words)."""
    words = "".join(ch.lower() if ch.isalnum() else " " for ch in text).split()
    grams = {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}
    return np.unique(np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64, count=len(grams)))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def exact_duplicates(texts: Sequence[str]) -> dict[int, tuple[int, float]]:
    """{row: (first row with the same normalised text, 1.0)} for every later copy."""
    first: dict[str, int] = {}
    out = {}
    for i, t in enumerate(texts):
        h = text_hash(t)
        if h in first:
            out[i] = (first[h], 1.0)
        else:
            first[h] = i
    return out


class NearIndex:
    """MinHash LSH over word-trigram shingles; ``query`` returns the best verified match."""

    def __init__(self, threshold: float = 0.5, num_perm: int = 128, n: int = 3):
        from datasketch import MinHash, MinHashLSH

        self._MinHash = MinHash
        self.threshold, self.num_perm, self.n = threshold, num_perm, n
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.shingles: dict[int, np.ndarray] = {}
        proto = MinHash(num_perm=num_perm, seed=1)  # default scheme (affine32: 32-bit inputs, crc32 fits)
        self._perm, self._scheme = proto.permutations, proto.scheme  # shared: no per-row RNG set-up

    def minhash(self, sh: np.ndarray):
        m = self._MinHash(num_perm=self.num_perm, seed=1, permutations=self._perm, scheme=self._scheme, hashfunc=int)
        m.update_batch(sh.tolist())
        return m

    def query(self, sh: np.ndarray, m=None) -> tuple[int | None, float]:
        m = m if m is not None else self.minhash(sh)
        best, score = None, 0.0
        for key in self.lsh.query(m):
            s = jaccard(sh, self.shingles[key])
            if s > score or (s == score and best is not None and key < best):
                best, score = key, s
        return (best, score) if best is not None and score >= self.threshold else (None, score)

    def add(self, key: int, sh: np.ndarray, m=None) -> None:
        self.lsh.insert(key, m if m is not None else self.minhash(sh))
        self.shingles[key] = sh


def near_duplicates(texts: Sequence[str], *, threshold: float = 0.5, num_perm: int = 128,
                    skip: set[int] = frozenset()) -> dict[int, tuple[int, float]]:
    """{row: (earlier kept row, word-trigram Jaccard)} for rows at or above ``threshold``."""
    index = NearIndex(threshold, num_perm)
    out = {}
    for i, t in enumerate(texts):
        if i in skip:
            continue
        sh = shingles(t)
        m = index.minhash(sh)
        j, score = index.query(sh, m)
        if j is not None:
            out[i] = (j, round(score, 4))
        else:
            index.add(i, sh, m)
    return out


def embed_texts(texts: Sequence[str], batch_size: int = 64, max_length: int = 256) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 embeddings (mean pooling, as the audit computes them), float32.
    Texts are batched by length so little compute goes to padding; the output keeps the input order."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from promedical.core.audit import embedding_model_dir

    path = embedding_model_dir()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # fp32 on both: the 0.9 threshold is calibrated there
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval().to(device)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out[idx] = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).cpu().numpy()
    return out


def semantic_duplicates(embeddings: np.ndarray, *, threshold: float = 0.9, block: int = 1024,
                        skip: set[int] = frozenset()) -> dict[int, tuple[int, float]]:
    """{row: (earlier kept row, cosine)} greedily in row order; rows in ``skip`` are neither kept nor compared."""
    import torch

    emb = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    kept = torch.empty_like(emb)
    kept_ids: list[int] = []
    out = {}
    rows = [i for i in range(len(emb)) if i not in skip]
    for k in range(0, len(rows), block):
        ids = rows[k:k + block]
        x = emb[ids]
        if kept_ids:
            sims = x @ kept[:len(kept_ids)].T
            best, arg = sims.max(dim=1)
        else:
            best = torch.full((len(ids),), -1.0)
            arg = torch.zeros(len(ids), dtype=torch.long)
        inner = x @ x.T
        block_kept: list[int] = []
        for a, i in enumerate(ids):
            score, match = float(best[a]), kept_ids[int(arg[a])] if kept_ids else None
            if block_kept:
                sb = inner[a, block_kept]
                b = int(sb.argmax())
                if float(sb[b]) > score:
                    score, match = float(sb[b]), ids[block_kept[b]]
            if match is not None and score >= threshold:
                out[i] = (match, round(min(score, 1.0), 4))
            else:
                block_kept.append(a)
        for a in block_kept:
            kept[len(kept_ids)] = x[a]
            kept_ids.append(ids[a])
    return out


def cross_matches(queries: Sequence[str], corpus: Sequence[str], *, threshold: float = 0.5, num_perm: int = 128,
                  embeddings: tuple[np.ndarray, np.ndarray] | None = None, cosine_threshold: float = 0.9) -> dict[int, dict]:
    """For each query row that matches the corpus: {"match": corpus row, "kind": exact|ngram|embedding, "score"}.
    Used for decontamination (train vs bench, train vs an outside benchmark)."""
    out: dict[int, dict] = {}
    by_hash = {}
    for j, t in enumerate(corpus):
        by_hash.setdefault(text_hash(t), j)
    index = NearIndex(threshold, num_perm)
    for j, t in enumerate(corpus):
        index.add(j, shingles(t))
    cos_best = cos_arg = None
    if embeddings is not None and len(corpus) and len(queries):
        import torch

        q, c = (torch.from_numpy(np.ascontiguousarray(e, dtype=np.float32)) for e in embeddings)
        best, arg = [], []
        for k in range(0, len(q), 1024):
            b, a = (q[k:k + 1024] @ c.T).max(dim=1)
            best.append(b)
            arg.append(a)
        cos_best, cos_arg = torch.cat(best).tolist(), torch.cat(arg).tolist()
    for i, t in enumerate(queries):
        j = by_hash.get(text_hash(t))
        if j is not None:
            out[i] = {"match": j, "kind": "exact", "score": 1.0}
            continue
        j, score = index.query(shingles(t))
        if j is not None:
            out[i] = {"match": j, "kind": "ngram", "score": round(score, 4)}
        elif cos_best is not None and cos_best[i] >= cosine_threshold:
            out[i] = {"match": cos_arg[i], "kind": "embedding", "score": round(min(cos_best[i], 1.0), 4)}
    return out

"""Duplicates: exact (normalised hash), near (MinHash LSH, verified by the exact word-trigram Jaccard the
audit uses) and semantic (embedding cosine, ``promedical.corpus.embeddings``).

Each stage keeps the first of a group: a later row is dropped as the duplicate of an earlier *kept* row,
and the result names that row and the score. Every stage takes its texts as a stream of batches, so no
stage holds the corpus' text; what grows with the corpus is compact:

- exact: a 12-byte digest a row;
- near: the word-trigram hashes (4 bytes each, ~60 a row), the LSH band keys (8 bytes a band a row).
  MinHash signatures come from ``rensa`` (Rust, from the same 32-bit trigram hashes); candidate pairs are
  the rows that share a band key, found by sorting each band's keys (no per-row index objects); each
  candidate pair is verified by its exact Jaccard;
- semantic: the kept rows' vectors. ``index="exact"`` compares every row with every kept row (blocked
  matrix products: rows x kept, right for tens of thousands); ``index="ann"`` searches a ``usearch``
  HNSW index of the kept rows (``AnnIndex``) for 16 candidates, scores them by their true cosine, and
  compares exactly within each block, so the cost grows as n log n.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from typing import Iterable, Sequence

import numpy as np

from promedical.core.text import normalize

_NOT_ALNUM = re.compile(r"[\W_]+")
BANDS, ROWS_PER_BAND = 32, 4  # P(candidate) at Jaccard 0.5: 0.87, at 0.6: 0.99, at 0.2: 0.05 (128 permutations)
MAX_BUCKET_PAIRS = 64  # in a band bucket shared by many rows, each row is paired with its 64 predecessors
_SEED = 1


def text_hash(text: str) -> str:
    return hashlib.sha1(normalize(text).encode()).hexdigest()


def _digest(text: str) -> bytes:
    """12 bytes of ``text_hash``: what the exact stages keep a row."""
    return hashlib.sha1(normalize(text).encode()).digest()[:12]


def shingles(text: str, n: int = 3) -> np.ndarray:
    """Sorted unique 32-bit hashes (crc32) of the word n-grams; words are runs of letters and digits,
    lower-cased (``promedical.core.text.word_ngrams``' words)."""
    words = _NOT_ALNUM.sub(" ", text).lower().split()
    grams = {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}
    return np.unique(np.fromiter(map(zlib.crc32, map(str.encode, grams)), dtype=np.uint32, count=len(grams)))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def _batched(texts: Iterable, size: int = 10_000) -> Iterable[list[str]]:
    """A flat iterable of texts, or already an iterable of batches, as batches."""
    batch: list[str] = []
    for t in texts:
        if isinstance(t, list):
            if batch:
                yield batch
                batch = []
            yield t
            continue
        batch.append(t)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def exact_duplicates(texts: Iterable[str]) -> dict[int, tuple[int, float]]:
    """{row: (first row with the same normalised text, 1.0)} for every later copy. ``texts``: the rows'
    texts, or batches (lists) of them in order."""
    first: dict[bytes, int] = {}
    out = {}
    i = 0
    for batch in _batched(texts):
        for t in batch:
            h = _digest(t)
            j = first.setdefault(h, i)
            if j != i:
                out[i] = (j, 1.0)
            i += 1
    return out


class Shingled:
    """The word-trigram hashes of many rows in one flat buffer, their MinHash band keys beside them."""

    def __init__(self, num_perm: int = 128):
        if num_perm < BANDS * ROWS_PER_BAND:
            raise ValueError(f"num_perm must be at least {BANDS * ROWS_PER_BAND} (LSH bands x rows)")
        self.num_perm = num_perm
        self._chunks: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []  # the caller's row numbers
        mix = np.random.default_rng(_SEED).integers(1, 2 ** 63, size=ROWS_PER_BAND, dtype=np.uint64)
        self._mix = mix | np.uint64(1)

    def add(self, texts: Sequence[str], rows: Sequence[int]) -> None:
        import rensa

        sh = [shingles(t) for t in texts]
        lengths = np.fromiter((len(s) for s in sh), dtype=np.int64, count=len(sh))
        flat = np.concatenate(sh) if sh else np.zeros(0, np.uint32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint64)
        digests = np.asarray(rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            flat.astype(np.uint64), offsets, self.num_perm, _SEED).to_rows(), dtype=np.uint64).reshape(len(sh), -1)
        bands = digests[:, :BANDS * ROWS_PER_BAND].reshape(len(sh), BANDS, ROWS_PER_BAND)
        with np.errstate(over="ignore"):
            keys = (bands * self._mix).sum(axis=2, dtype=np.uint64)  # one 64-bit key a band (wraps mod 2^64)
        self._chunks.append(flat)
        self._lengths.append(lengths)
        self._keys.append(keys)
        self.rows.append(np.asarray(rows, dtype=np.int64))

    def freeze(self) -> None:
        self.flat = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.uint32)
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])
        self.keys = np.concatenate(self._keys) if self._keys else np.zeros((0, BANDS), np.uint64)
        self.row_of = np.concatenate(self.rows) if self.rows else np.zeros(0, np.int64)
        self._chunks, self._lengths, self._keys = [], [], []

    def __len__(self) -> int:
        return len(self.row_of)

    def get(self, k: int) -> np.ndarray:
        return self.flat[self.starts[k]:self.starts[k + 1]]

    def candidate_pairs(self) -> np.ndarray:
        """(earlier, later) positions of every pair that shares a band key, once each, sorted by later."""
        n = len(self)
        found = []
        for b in range(BANDS):
            order = np.argsort(self.keys[:, b], kind="stable")  # stable: positions ascend within a bucket
            k = self.keys[order, b]
            for d in range(1, MAX_BUCKET_PAIRS + 1):
                same = k[d:] == k[:-d]
                if not same.any():
                    break
                found.append(order[:-d][same] * n + order[d:][same])
        if not found:
            return np.zeros((0, 2), np.int64)
        codes = np.unique(np.concatenate(found))
        pairs = np.stack([codes // n, codes % n], axis=1)
        return pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]


def _shingle_stream(texts: Iterable, num_perm: int, skip=frozenset()) -> Shingled:
    index = Shingled(num_perm)
    i = 0
    for batch in _batched(texts):
        keep = [a for a in range(len(batch)) if i + a not in skip]
        index.add([batch[a] for a in keep], [i + a for a in keep])
        i += len(batch)
    index.freeze()
    return index


def near_duplicates(texts: Iterable[str], *, threshold: float = 0.5, num_perm: int = 128,
                    skip: set[int] = frozenset()) -> dict[int, tuple[int, float]]:
    """{row: (earlier kept row, word-trigram Jaccard)} for rows at or above ``threshold``; rows in ``skip``
    are neither kept nor compared. ``texts``: every row's text (skipped ones too), or batches of them."""
    index = _shingle_stream(texts, num_perm, skip)
    kept = np.ones(len(index), dtype=bool)
    out: dict[int, tuple[int, float]] = {}
    best: tuple[int, float] | None = None
    current = -1
    for a, b in index.candidate_pairs():  # sorted by the later row: decide each row once its pairs are seen
        if b != current:
            if best is not None:
                kept[current] = False
                out[int(index.row_of[current])] = (int(index.row_of[best[0]]), round(best[1], 4))
            current, best = b, None
        if not kept[a]:
            continue
        s = jaccard(index.get(a), index.get(b))
        if s >= threshold and (best is None or s > best[1]):
            best = (a, s)
    if best is not None:
        out[int(index.row_of[current])] = (int(index.row_of[best[0]]), round(best[1], 4))
    return out


class AnnIndex:
    """Kept rows' vectors for nearest-neighbour search: a ``usearch`` HNSW index (int8) of the vectors
    centred on the corpus mean (static embeddings share a large common direction that misleads the
    graph search: top-1 recall of pairs at cosine >= 0.91 went from 0.80 to 0.96, and 1.00 with 16
    candidates), and the vectors themselves (float16) to score each candidate by its true cosine."""

    CANDIDATES = 16
    INDEX_DIMS = 128  # the graph is searched on the leading (PCA-ordered) dimensions of the centred vectors:
    # on 100k synthetic rows 17% faster than all 256, recall of the exact search's drops 0.996 (0.995 with 256)

    def __init__(self, dim: int, mean: np.ndarray, centred_floor: float | None = None):
        from usearch.index import Index

        self.centred_floor = centred_floor
        self.dims = min(dim, self.INDEX_DIMS)
        self.index = Index(ndim=self.dims, metric="cos", dtype="i8", connectivity=16, expansion_add=64,
                           expansion_search=48)
        self.mean = mean.astype(np.float32)
        self.store = np.zeros((1024, dim), dtype=np.float16)

    def _centred(self, x: np.ndarray) -> np.ndarray:
        y = x - self.mean
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    def _leading(self, x: np.ndarray) -> np.ndarray:
        y = self._centred(x)[:, :self.dims]
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    def add(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) and keys.max() >= len(self.store):
            grown = np.zeros((max(2 * len(self.store), int(keys.max()) + 1), self.store.shape[1]), dtype=np.float16)
            grown[:len(self.store)] = self.store
            self.store = grown
        self.store[keys] = vecs
        self.index.add(keys, self._leading(vecs))

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        return self.store[np.asarray(keys, dtype=np.int64)].astype(np.float32)

    def similarity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cosine of unit rows x and y, or -1 where their centred cosine is below ``centred_floor``."""
        cos = x @ y.T
        if self.centred_floor is not None:
            cos = np.where(self._centred(x) @ self._centred(y).T >= self.centred_floor, cos, -1.0)
        return cos

    def search(self, x: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(keys, true cosines), each (len(x), k), best first; a missing neighbour has key -1, cosine -1 (so
        has a neighbour whose centred cosine is below ``centred_floor``)."""
        k = min(k or self.CANDIDATES, max(len(self.index), 1))
        found = self.index.search(self._leading(x), k)
        keys = np.asarray(found.keys, dtype=np.int64).reshape(len(x), -1)
        counts = found.counts if hasattr(found, "counts") else [len(found.keys)]  # one query: Matches, not BatchMatches
        valid = np.arange(keys.shape[1])[None, :] < np.asarray(counts).reshape(-1, 1)
        keys = np.where(valid, keys, 0)
        x = x.astype(np.float32)
        cand = self.store[keys].astype(np.float32)
        cos = np.einsum("md,mkd->mk", x, cand)
        if self.centred_floor is not None:
            xc, cc = self._centred(x), cand - self.mean
            cc /= np.maximum(np.linalg.norm(cc, axis=2, keepdims=True), 1e-12)
            valid &= np.einsum("md,mkd->mk", xc, cc) >= self.centred_floor
        cos = np.where(valid, cos, -1.0)
        order = np.argsort(-cos, axis=1, kind="stable")
        return np.where(valid, keys, -1)[np.arange(len(x))[:, None], order], np.take_along_axis(cos, order, axis=1)

    def __len__(self) -> int:
        return len(self.index)


def semantic_duplicates(embeddings: np.ndarray | Iterable[np.ndarray], *, threshold: float = 0.9,
                        block: int = 1024, skip: set[int] = frozenset(), index: str = "exact",
                        keep_index: list | None = None, centred_floor: float | None = None) -> dict[int, tuple[int, float]]:
    """{row: (earlier kept row, cosine)} greedily in row order; rows in ``skip`` are neither kept nor
    compared. ``embeddings``: unit-norm vectors, one array or a stream of arrays (batches in row order).
    ``index``: "exact" (every kept row) or "ann" (``AnnIndex`` of the kept rows: 16 nearest candidates,
    each scored by its true cosine). With ``keep_index`` (a list), the ``AnnIndex`` is appended to it for
    later searches (the split audit). ``centred_floor`` (ANN only): a pair is also required to have a cosine
    of at least this after centring both vectors on the corpus mean (the first batch's)."""
    import torch

    batches = [embeddings] if isinstance(embeddings, np.ndarray) else embeddings
    ann: AnnIndex | None = None
    kept_vecs: list[np.ndarray] = []
    kept_ids: list[int] = []
    out = {}
    start = 0
    for batch in batches:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if ann is None and index == "ann" and len(batch):
            ann = AnnIndex(batch.shape[1], batch.mean(axis=0), centred_floor)
        rows = [start + a for a in range(len(batch)) if start + a not in skip]
        local = {r: r - start for r in rows}
        start += len(batch)
        for k in range(0, len(rows), block):
            ids = rows[k:k + block]
            x = torch.from_numpy(batch[[local[i] for i in ids]])
            best = torch.full((len(ids),), -1.0)
            arg = [-1] * len(ids)
            if kept_ids and ann is not None:
                keys, cos = ann.search(x.numpy())
                best, arg = torch.from_numpy(cos[:, 0].astype(np.float32)), [int(j) for j in keys[:, 0]]
            elif kept_ids:
                kept = torch.from_numpy(np.concatenate(kept_vecs)) if len(kept_vecs) > 1 else torch.from_numpy(kept_vecs[0])
                kept_vecs = [kept.numpy()]
                b, a = (x @ kept.T).max(dim=1)
                best, arg = b, [kept_ids[int(j)] for j in a]
            # in-block: a row whose earlier block rows are all below the threshold is decided by ``best``
            # alone; only rows with an in-block candidate walk the greedy order (rare: duplicates are)
            inner = ann.similarity(x.numpy(), x.numpy()) if ann is not None else (x @ x.T).numpy()
            close = np.tril(inner >= threshold, k=-1)
            has_close = close.any(axis=1)
            best_np = best.numpy() if isinstance(best, torch.Tensor) else np.asarray(best)
            keep = np.where(has_close, False, best_np < threshold)
            for a in np.flatnonzero(~has_close & ~keep):
                out[ids[a]] = (arg[a], round(min(float(best_np[a]), 1.0), 4))
            for a in np.flatnonzero(has_close):
                score, match = float(best_np[a]), (arg[a] if arg[a] >= 0 else None)
                earlier = np.flatnonzero(keep[:a])
                if len(earlier):
                    b = int(earlier[inner[a, earlier].argmax()])
                    if float(inner[a, b]) > score:
                        score, match = float(inner[a, b]), ids[b]
                if match is not None and score >= threshold:
                    out[ids[a]] = (match, round(min(score, 1.0), 4))
                else:
                    keep[a] = True
            block_kept = np.flatnonzero(keep).tolist()
            if block_kept:
                new = x[block_kept].numpy()
                new_ids = [ids[a] for a in block_kept]
                if ann is not None:
                    ann.add(np.asarray(new_ids, dtype=np.int64), new)
                else:
                    kept_vecs.append(new)
                kept_ids.extend(new_ids)
    if keep_index is not None:
        keep_index.append(ann)
    return out


def cross_matches(queries: Iterable[str], corpus: Iterable[str], *, threshold: float = 0.5, num_perm: int = 128,
                  embeddings: tuple[np.ndarray, np.ndarray] | None = None, cosine_threshold: float = 0.9,
                  cosine_best=None) -> dict[int, dict]:
    """For each query row that matches the corpus: {"match": corpus row, "kind": exact|ngram|embedding, "score"}.
    Used for decontamination (train vs bench, train vs an outside benchmark) and the split audit. ``queries``
    and ``corpus`` may be streams of texts (or batches); ``cosine_best`` (a function of the query rows'
    positions giving (best cosine, corpus row) arrays) replaces ``embeddings`` where an index exists."""
    by_hash: dict[bytes, int] = {}
    index = Shingled(num_perm)
    n_corpus = 0
    for batch in _batched(corpus):
        for j, t in enumerate(batch):
            by_hash.setdefault(_digest(t), n_corpus + j)
        index.add(batch, range(n_corpus, n_corpus + len(batch)))
        n_corpus += len(batch)
    exact: dict[int, int] = {}
    n_queries = 0
    for batch in _batched(queries):
        for a, t in enumerate(batch):
            j = by_hash.get(_digest(t))
            if j is not None:
                exact[n_queries + a] = j
        index.add(batch, range(-1 - n_queries, -1 - n_queries - len(batch), -1))  # queries: negative rows
        n_queries += len(batch)
    index.freeze()
    ngram: dict[int, tuple[int, float]] = {}
    for a, b in index.candidate_pairs():
        ra, rb = int(index.row_of[a]), int(index.row_of[b])
        if (ra < 0) == (rb < 0):
            continue
        q, c, qa, cb = (-1 - ra, rb, a, b) if ra < 0 else (-1 - rb, ra, b, a)
        s = jaccard(index.get(qa), index.get(cb))
        if s >= threshold and (q not in ngram or s > ngram[q][1] or (s == ngram[q][1] and c < ngram[q][0])):
            ngram[q] = (c, s)
    cos_best = cos_arg = None
    if cosine_best is not None and n_queries:
        cos_best, cos_arg = cosine_best(np.arange(n_queries))
    elif embeddings is not None and n_corpus and n_queries:
        import torch

        q, c = (torch.from_numpy(np.ascontiguousarray(e, dtype=np.float32)) for e in embeddings)
        best, arg = [], []
        for k in range(0, len(q), 1024):
            b, a = (q[k:k + 1024] @ c.T).max(dim=1)
            best.append(b)
            arg.append(a)
        cos_best, cos_arg = torch.cat(best).numpy(), torch.cat(arg).numpy()
    out: dict[int, dict] = {}
    for i in range(n_queries):
        if i in exact:
            out[i] = {"match": exact[i], "kind": "exact", "score": 1.0}
        elif i in ngram:
            out[i] = {"match": ngram[i][0], "kind": "ngram", "score": round(ngram[i][1], 4)}
        elif cos_best is not None and cos_best[i] >= cosine_threshold:
            out[i] = {"match": int(cos_arg[i]), "kind": "embedding", "score": round(min(float(cos_best[i]), 1.0), 4)}
    return out

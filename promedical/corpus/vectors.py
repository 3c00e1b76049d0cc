"""The curated rows' embeddings, held once for the semantic stages of step 00: semantic dedup, the
bench-vs-train and outside-benchmark decontamination, and the split audit.

MiniLM (small corpora): every row's vector in one matrix, every comparison exact. Static model (large
corpora): the kept rows in a ``usearch`` HNSW index (int8 vectors, 256 numbers a row), nearest neighbours
searched (``dedup.AnnIndex``: candidates scored by their true cosine); no rows x rows matrix is built.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from promedical.core.audit import THRESHOLDS
from promedical.corpus.dedup import AnnIndex, semantic_duplicates
from promedical.corpus.embeddings import CENTRED_FLOOR, embed

NEIGHBOURS = 32  # ANN neighbours searched when a query must skip some rows (bench rows looking for train rows)


class Vectors:
    def __init__(self, embedder: str, rows: np.ndarray, config):
        self.embedder, self.rows, self.batch_size = embedder, np.asarray(rows, dtype=np.int64), config.embed_batch_size
        self.model_name = "MiniLM" if embedder == "minilm" else "static"
        self.threshold = config.semantic_threshold if embedder == "minilm" else config.static_threshold
        self.audit_threshold = THRESHOLDS["embedding_cosine"] if embedder == "minilm" else config.static_threshold
        self.matrix: np.ndarray | None = None  # minilm: every row
        self.index = None  # static: the kept rows (keys: positions in ``rows``)

    @property
    def exact(self) -> bool:
        """Every comparison exact (MiniLM matrix), not a nearest-neighbour search."""
        return self.embedder == "minilm"

    def _stream(self, text_batches: Iterable[list[str]]):
        for texts in text_batches:
            yield embed(texts, self.embedder, self.batch_size)

    def dedup(self, text_batches: Iterable[list[str]]) -> dict[int, tuple[int, float]]:
        """Semantic duplicates among ``rows`` ({position: (earlier kept position, cosine)})."""
        held: list = []
        if self.embedder == "minilm":
            self.matrix = np.concatenate(list(self._stream(text_batches)) or [np.zeros((0, 384), np.float32)])
            return semantic_duplicates(self.matrix, threshold=self.threshold)
        out = semantic_duplicates(self._stream(text_batches), threshold=self.threshold, index="ann", keep_index=held,
                                  centred_floor=CENTRED_FLOOR)
        self.index = held[0]
        return out

    def embed_only(self, text_batches: Iterable[list[str]]) -> None:
        """Embeddings without dedup (semantic_dedup off, the decontamination and audit still need them)."""
        if self.embedder == "minilm":
            self.matrix = np.concatenate(list(self._stream(text_batches)) or [np.zeros((0, 384), np.float32)])
            return
        start = 0
        for vecs in self._stream(text_batches):
            if self.index is None and len(vecs):
                self.index = AnnIndex(vecs.shape[1], vecs.mean(axis=0), CENTRED_FLOOR)
            if len(vecs):
                self.index.add(np.arange(start, start + len(vecs)), vecs)
            start += len(vecs)

    def _positions(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.rows, rows)

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        pos = self._positions(rows)
        if self.matrix is not None:
            return self.matrix[pos]
        if self.index is None or not len(pos):
            return np.zeros((len(pos), 256), np.float32)
        return self.index.vectors(pos)

    def best_among(self, queries: np.ndarray, corpus: np.ndarray) -> Callable:
        """A function of query positions (into ``queries``) giving (best cosine, position in ``corpus``) arrays."""
        def best(which: np.ndarray):
            q_rows = queries[which]
            if self.matrix is not None or not len(corpus) or self.index is None:
                return _exact_best(self._vectors(q_rows), self._vectors(corpus))
            corpus_pos = self._positions(corpus)
            at = np.full(len(self.rows), -1, dtype=np.int64)
            at[corpus_pos] = np.arange(len(corpus))
            scores = np.full(len(q_rows), -1.0, dtype=np.float32)
            args = np.zeros(len(q_rows), dtype=np.int64)
            for k in range(0, len(q_rows), 4096):
                keys, cos = self.index.search(self._vectors(q_rows[k:k + 4096]), NEIGHBOURS)
                ok = (keys >= 0) & (at[np.maximum(keys, 0)] >= 0)
                cos = np.where(ok, cos, -1.0)
                j = cos.argmax(axis=1)
                scores[k:k + len(keys)] = cos[np.arange(len(keys)), j]
                args[k:k + len(keys)] = at[np.maximum(keys[np.arange(len(keys)), j], 0)]
            return scores, args
        return best

    def best_against(self, queries: np.ndarray, texts: Sequence[str]) -> Callable:
        """A function of query positions giving (best cosine, index in ``texts``): rows vs outside texts."""
        outside = embed(list(texts), self.embedder, self.batch_size)

        def best(which: np.ndarray):
            q = self._vectors(queries[which])
            if self.index is None:
                return _exact_best(q, outside)
            scores, args = [], []
            for k in range(0, len(q), 4096):
                sim = self.index.similarity(q[k:k + 4096], outside)
                args.append(sim.argmax(axis=1))
                scores.append(sim[np.arange(len(sim)), args[-1]])
            if not scores:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            return np.concatenate(scores), np.concatenate(args)
        return best


def _exact_best(q: np.ndarray, c: np.ndarray, block: int = 4096):
    import torch

    if not len(c) or not len(q):
        return np.full(len(q), -1.0, dtype=np.float32), np.zeros(len(q), dtype=np.int64)
    ct = torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))
    best, arg = [], []
    for k in range(0, len(q), block):
        b, a = (torch.from_numpy(np.ascontiguousarray(q[k:k + block], dtype=np.float32)) @ ct.T).max(dim=1)
        best.append(b.numpy())
        arg.append(a.numpy())
    return np.concatenate(best), np.concatenate(arg)

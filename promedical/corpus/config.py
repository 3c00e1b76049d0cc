"""One typed config for step 00 (the registry's ``data`` step): notebook 00's parameters cell, a scale's
``steps: {data: ...}``, ``promedical step data``, ``promedical ingest/curate`` and ``step_data`` all fill
this dataclass. Every field carries its help text; ``__post_init__`` rejects a bad value with one line
naming the field and what it accepts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from promedical.core.audit import THRESHOLDS
from promedical.core.config import BACKENDS, ConfigMixin, option
from promedical.core.params import bound_problem
from promedical.corpus.embeddings import EMBEDDERS, STATIC_THRESHOLD

COLUMN_KEYS = ("prompt", "messages", "conversations", "question", "options", "system", "id", "category",
               "specialty", "input")


@dataclass
class DataConfig(ConfigMixin):
    """00: ingest a corpus (when ``sources`` are given), dedup, LLM difficulty and category labels, the
    decontaminated train/bench split and the funnel."""

    STEP: ClassVar[str] = "data"

    # --- ingest ---
    sources: list = option("files (.jsonl .json .csv .parquet), folders of them, datasets.save_to_disk folders, "
                           "or hf:ORG/NAME[:SPLIT] hub ids, ingested before curation", factory=list)
    columns: dict = option("column overrides KEY -> column name; KEY in " + ", ".join(COLUMN_KEYS), factory=dict)
    max_chars: int = option("a row whose instruction (all turns) is longer than this is rejected as over-long", 20000)
    # --- dedup ---
    exact_dedup: bool = option("drop exact duplicates of the normalised text (NFKC, case-folded, whitespace collapsed)", True)
    near_dedup: bool = option("drop near duplicates: MinHash LSH candidates verified by word-trigram Jaccard", True)
    near_threshold: float = option("word-trigram Jaccard at or above which two rows are near duplicates "
                                   "(the audit's threshold)", THRESHOLDS["ngram_jaccard"])
    num_perm: int = option("MinHash permutations (more: fewer missed candidates, slower)", 128)
    semantic_dedup: bool = option("drop semantic duplicates: all-MiniLM-L6-v2 cosine at or above semantic_threshold", True)
    semantic_threshold: float = option("embedding cosine at or above which two rows are semantic duplicates "
                                       "(the audit's threshold)", THRESHOLDS["embedding_cosine"])
    embedder: str = option("the semantic stages' embedding model: minilm (all-MiniLM-L6-v2, the audit's model, ~30 "
                           "rows/s on 2 CPU cores), static (model2vec distilled from it, ~14,000 rows/s, with an ANN "
                           "index) or auto (minilm up to 20,000 rows, static above)", "auto")
    static_threshold: float = option("static-model cosine at or above which two rows are semantic duplicates: the "
                                     "static equivalent of MiniLM cosine 0.9 (calibrated, docs/curation_at_scale.md)",
                                     STATIC_THRESHOLD)
    embed_batch_size: int = option("texts per embedding forward pass", 64)
    # --- LLM labels ---
    difficulty: bool = option("an LLM rates each instruction 0-10 with a reason; rows outside difficulty_band are dropped", True)
    difficulty_band: list = option("[low, high] inclusive band of difficulty kept (the paper: 5-9)", factory=lambda: [5, 9])
    keep_unrated: bool = option("keep rows whose difficulty could not be parsed (default: drop them, with the reason)", False)
    classify: bool = option("an LLM assigns category and specialty from the taxonomy (rows that carry both keep theirs)", True)
    taxonomy: str | None = option("JSON or YAML file {categories: [...], specialties: [...]} replacing the kit's taxonomy", None)
    backend: str = option("LLM backend for the label stages: " + " | ".join(BACKENDS), "transformers")
    model: str = option("model for the label stages: embedded, a HF id or a local path", "embedded")
    base_url: str | None = option("OpenAI-compatible endpoint for backend=openai, e.g. http://127.0.0.1:8000/v1", None)
    concurrency: int = option("requests in flight for backend=openai (a vLLM server batches them)", 256)
    label_chunk: int = option("instructions per generate call on a local model (a served one gets at least 4 x "
                              "concurrency, so that many stay in flight); results are appended after each chunk "
                              "(the resume point)", 64)
    max_new_tokens: int = option("token budget of one label answer", 96)
    # --- split ---
    bench_fraction: float = option("share of kept rows held out as the benchmark, per category (stratified)", 0.2)
    bench_size: int | None = option("absolute benchmark size (overrides bench_fraction), spread over categories", None)
    bench_sources: list = option("source names or paths whose rows are the bench, all others train (no random split), "
                                 "e.g. a reference benchmark ingested with the corpus", factory=list)
    decontaminate: list = option("outside benchmark files (HealthBench JSONL, kit rubrics, any ingestable file): "
                                 "train rows that near-duplicate them are dropped", factory=list)
    decontam_embeddings: bool = option("use the embedding cosine check in decontamination and the split audit", True)
    seed: int = option("seed of the split", 0)

    def __post_init__(self):
        def bad(name, message):
            raise ValueError(f"parameter {name}: {message}, got {getattr(self, name)!r}")

        for name in ("sources", "decontaminate", "bench_sources"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
                bad(name, "must be a list of non-empty paths")
            else:
                setattr(self, name, list(value))
        if not isinstance(self.columns, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                         for k, v in self.columns.items()):
            bad("columns", "must map KEY to a column name")
        unknown = sorted(set(self.columns) - set(COLUMN_KEYS))
        if unknown:
            bad("columns", f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(COLUMN_KEYS)}")
        for name in ("exact_dedup", "near_dedup", "semantic_dedup", "difficulty", "keep_unrated", "classify",
                     "decontam_embeddings"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be true or false")
        if self.embedder not in EMBEDDERS:
            bad("embedder", f"must be one of {', '.join(EMBEDDERS)}")
        for name, lo, hi in (("near_threshold", 0.0, 1.0), ("semantic_threshold", 0.0, 1.0), ("static_threshold", 0.0, 1.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo < v <= hi:
                bad(name, f"must be a number in ({lo}, {hi}]")
        if not isinstance(self.bench_fraction, (int, float)) or isinstance(self.bench_fraction, bool) \
                or not 0 <= self.bench_fraction < 1:
            bad("bench_fraction", "must be a number in [0, 1)")
        for name in ("max_chars", "num_perm", "embed_batch_size", "concurrency", "label_chunk", "max_new_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "must be a positive integer")
        if self.bench_size is not None and (not isinstance(self.bench_size, int) or isinstance(self.bench_size, bool)
                                            or self.bench_size < 0):
            bad("bench_size", "must be a non-negative integer or null")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            bad("seed", "must be a non-negative integer")
        for name in ("max_chars", "num_perm", "embed_batch_size", "concurrency", "label_chunk", "max_new_tokens",
                     "bench_size", "seed"):  # upper bounds: core/params.py UPPER_BOUNDS
            problem = bound_problem(name, getattr(self, name))
            if problem:
                raise ValueError(f"parameter {name}: {problem}")
        band = self.difficulty_band
        if not (isinstance(band, (list, tuple)) and len(band) == 2
                and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 10 for b in band) and band[0] <= band[1]):
            bad("difficulty_band", "must be [low, high], integers 0-10 with low <= high")
        self.difficulty_band = list(band)
        if self.backend not in BACKENDS:
            bad("backend", f"must be one of {', '.join(BACKENDS)}")
        if self.backend == "openai" and not self.base_url:
            bad("base_url", "backend=openai needs base_url, e.g. http://127.0.0.1:8000/v1")
        if not isinstance(self.model, str) or not self.model:
            bad("model", "must be a non-empty string")
        if self.taxonomy is not None and not isinstance(self.taxonomy, str):
            bad("taxonomy", "must be a file path or null")

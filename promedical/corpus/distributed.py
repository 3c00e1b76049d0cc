"""Step 00's non-LLM funnel past one machine: ingest -> exact dedup -> near dedup as datatrove pipelines, run by
datatrove's executors (``LocalPipelineExecutor`` here and in the tests, ``SlurmPipelineExecutor`` or
``RayPipelineExecutor`` on a cluster). The single-machine path (``promedical.corpus.step.curate``) stays the
default; this one is for a corpus that one machine cannot hold.

What is the kit's own and what is datatrove's:

- read: ``InstructionReader`` (a datatrove ``BaseReader``) parses each source file with the kit's readers and
  ``record_to_instruction``, so a row's id, text (``instruction_text``) and ingest rejects are the ones
  ``promedical ingest`` computes. Files are split into contiguous blocks, one per task, in the sources' order.
- exact dedup: datatrove's ``ExactDedupSignature`` -> ``ExactFindDedups`` -> ``ExactDedupFilter`` on the kit's
  normalised text (``promedical.core.text.normalize``), hashed with sha1 (its first 64 bits); among copies the
  earliest row is kept (file order via the priority, row order via the document index), as the kit does.
- near dedup: datatrove's ``MinhashDedupSignature`` (over the kit's word-trigram shingles: the subclass only
  swaps ``get_shingles``) -> ``MinhashDedupBuckets`` -> ``MinhashDedupCluster`` -> ``MinhashDedupFilter``,
  with the bands x rows that put LSH's S-curve on the kit's threshold (``lsh_shape``: 25 x 5 for 0.5 / 128).
  Differences from the kit (no Jaccard check of a bucket match; clusters are transitive; the kept row of a
  cluster of three or more is the union-find root): see ``docs/curation_at_scale.md``.

Output under ``OUT``: ``kept/*.jsonl.gz`` (the rows that pass), ``dropped/{ingest,exact_dedup,near_dedup}/*.jsonl.gz``
(each row with its stage and reason), ``run.json`` (files and parameters), ``logs/<pipeline>/`` (datatrove's
logs, stats and completion marks: re-running the same command resumes, skipping finished tasks).
``summarize(OUT)`` gives the funnel's counts (the same stages and numbers as ``funnel.json``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers.base import BaseReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer

from promedical.core.text import normalize
from promedical.corpus.dedup import shingles, text_hash
from promedical.corpus.ingest import row_id, unique_name
from promedical.corpus.readers import expand_source, is_saved_dataset, iter_file
from promedical.corpus.records import RowError, instruction_text, record_to_instruction

EXECUTORS = ("local", "slurm", "ray")
STAGES = ("ingest", "exact_dedup", "near_dedup")
MAX_PRIORITY = 65535  # datatrove's exact dedup keeps the copy with the highest priority (1..65535)


# ----------------------------------------------------------------------------------------------
# Sources -> files (in the order ingest reads them, with the source names ingest gives them)
# ----------------------------------------------------------------------------------------------
def plan_files(sources: list[str]) -> list[dict]:
    """[{"path", "source"}] for every file of every source spec, in ingest's order and with ingest's source
    names. ValueError for a missing source, and for hub ids and saved datasets (no files to shard: export
    them to Parquet or JSONL first)."""
    taken: dict[str, str] = {}
    files = []
    for spec in sources:
        if spec.startswith("hf:") or is_saved_dataset(Path(spec)):
            raise ValueError(f"{spec}: the distributed reader shards files; save it as Parquet or JSONL files first "
                             f"(datasets' to_parquet / to_json)")
        for name, label, _ in expand_source(spec):
            files.append({"path": label, "source": unique_name(name, label, taken)})
    return files


# ----------------------------------------------------------------------------------------------
# Pipeline steps (the glue; the dedup stages are datatrove's)
# ----------------------------------------------------------------------------------------------
class FateWriter(JsonlWriter):
    """JSONL rows with their fate: id, kept, stage, reason, the kit's text hash, the lineage and the row."""

    def __init__(self, output_folder, stage: str | None, reason: str | None = None):
        super().__init__(output_folder, output_filename="${rank}.jsonl.gz")
        self.stage, self.reason = stage, reason

    def _default_adapter(self, document: Document) -> dict:
        meta = dict(document.metadata)
        row = {"id": document.id, "kept": self.stage is None, "stage": self.stage,
               "reason": meta.pop("reason", self.reason)}
        if document.text:
            row.update(text=document.text, text_hash=text_hash(document.text))
        return row | meta


class InstructionReader(BaseReader):
    """The kit's ingest as a datatrove reader: each task reads a contiguous block of the files (so task order is
    file order), parses rows with the kit's readers and ``record_to_instruction`` and yields one Document per
    instruction (id and text as ``promedical ingest`` computes them; lineage in the metadata). Bad rows are
    written by ``rejects`` (when given) with ingest's reason, as ``PATH:ROW``."""

    name = "📋 kit instructions"

    def __init__(self, files: list[dict], *, columns: dict | None = None, max_chars: int = 20000,
                 rejects: FateWriter | None = None):
        super().__init__()
        self.files, self.columns, self.max_chars, self.rejects = files, columns, max_chars, rejects

    def shard(self, rank: int, world_size: int) -> range:
        n = len(self.files)
        return range(n * rank // world_size, n * (rank + 1) // world_size)

    def read_file(self, index: int, rejects, rank: int = 0) -> Iterator[Document]:
        spec = self.files[index]
        label, name = spec["path"], spec["source"]
        seen: dict[str, int] = {}
        row = 0
        rows = iter_file(Path(label), self.max_chars)
        while True:
            try:
                item = next(rows, None)
            except Exception as exc:  # a file that breaks mid-way: one reject line, keep what was read (as ingest)
                item = (row + 1 if row else 0, None,
                        f"unreadable file: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                rows = iter(())
            if item is None:
                return
            row, obj, err = item
            try:
                if err:
                    raise RowError(err)
                rec = record_to_instruction(obj, self.columns)
                chars = sum(len(m["content"]) for m in rec["messages"])
                if chars > self.max_chars:
                    raise RowError(f"over-long: {chars} characters > max_chars {self.max_chars}")
                rid = row_id(name, rec["original_id"], rec["messages"])
                if rid in seen:
                    raise RowError(f"exact duplicate of {rid} (identical messages, row {seen[rid]})"
                                   if rec["original_id"] is None
                                   else f"duplicate id {rec['original_id']!r} (first on row {seen[rid]})")
                seen[rid] = row
            except RowError as exc:
                self.stat_update("rejected")
                if rejects is not None:
                    rejects.write(Document(text="", id=f"{label}:{row}",
                                           metadata={"reason": str(exc), "path": label, "row": row}), rank)
                continue
            yield Document(text=instruction_text(rec["messages"]), id=rid, metadata={
                "source": name, "path": label, "row": row, "file_index": index, "original_id": rec["original_id"],
                "format": rec["format"], "dropped_turns": rec["dropped_turns"], "category": rec["category"],
                "specialty": rec["specialty"], "messages": rec["messages"],
                "rubric": json.dumps(rec["rubric"], ensure_ascii=False) if rec["rubric"] else None})

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        with self.rejects if self.rejects is not None else contextlib.nullcontext() as rejects:
            for index in self.shard(rank, world_size):
                self.stat_update("input_files")
                for doc in self.read_file(index, rejects, rank):
                    self.stat_update("documents")
                    self.update_doc_stats(doc)
                    yield doc



def kit_normalised(doc: Document) -> str:
    """What exact dedup compares: the kit's normalised text (NFKC, case-folded, whitespace collapsed)."""
    return normalize(doc.text)


def file_priority(doc: Document) -> int:
    """Earlier files win among exact copies (datatrove keeps the highest priority; rows of one file are in one
    task, where the earlier row wins). Past 65,534 files the priority stays at 1 (file order is then not kept)."""
    return max(1, MAX_PRIORITY - doc.metadata["file_index"])


class KitWords(WordTokenizer):
    """The kit's words (runs of letters and digits, lower-cased: ``promedical.core.text.word_ngrams``); stands in
    for datatrove's language tokenizers (English needs spaCy)."""

    def word_tokenize(self, text: str) -> list[str]:
        return "".join(ch.lower() if ch.isalnum() else " " for ch in text).split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


class KitMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signature over the kit's shingles (``promedical.corpus.dedup.shingles``: crc32 of the
    word n-grams the audit's Jaccard uses, without datatrove's text simplification, which would make "39.2" and
    "39.5" the same word), so bucket collisions estimate the Jaccard the kit verifies."""

    def __init__(self, output_folder, config: MinhashConfig):
        super().__init__(output_folder, config, language=KitWords("en"))

    def get_shingles(self, text: str):
        return shingles(text, self.config.n_grams).astype(np.uint64).reshape((-1, 1))


class ClusterFilesForEveryTask(PipelineStep):
    """After ``MinhashDedupCluster``: an empty ``.remove`` / ``.clusters`` file for each task without one, so
    ``MinhashDedupFilter`` loads the cluster ids of a task that keeps a cluster's row but removes none (the
    kept row's cluster id is how a dropped row names the row it duplicates)."""

    name = "🗂 cluster files"
    type = "🫂 - DEDUP"

    def __init__(self, folder, tasks: int):
        super().__init__()
        self.folder, self.tasks = get_datafolder(folder), tasks

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for r in range(self.tasks):
            for ext in (".remove", ".clusters"):
                if not self.folder.exists(f"{r:06d}{ext}"):
                    with self.folder.open(f"{r:06d}{ext}", "wb"):
                        pass
        yield from data or ()


# ----------------------------------------------------------------------------------------------
# The pipelines and their executors
# ----------------------------------------------------------------------------------------------
def lsh_shape(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) for MinHash LSH at ``threshold`` with ``num_perm`` hashes: the shape that makes the
    fewest false positives plus false negatives over Jaccard 0..1 (the rule and the result of
    ``datasketch.MinHashLSH``: 25 x 5 for 0.5 and 128). Without a Jaccard check after the buckets, the
    S-curve has to sit on the threshold itself."""
    lo, hi = np.linspace(0.0, threshold, 1001), np.linspace(threshold, 1.0, 1001)
    best = None
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            false_pos = np.trapezoid(1 - (1 - lo ** r) ** b, lo)
            false_neg = np.trapezoid((1 - hi ** r) ** b, hi)
            if best is None or false_pos + false_neg < best[0]:
                best = (false_pos + false_neg, b, r)
    return best[1], best[2]


def _executor(kind: str, pipeline: list, *, tasks: int, workers: int, logging_dir: str, depends, name: str,
              options: dict):
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks) if workers > 0 else -1,
                                     logging_dir=logging_dir, depends=depends, **options)
    if kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        opts = {"time": "04:00:00", "partition": "cpu", **options}
        return SlurmPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, depends=depends,
                                     job_name=f"promedical-{name}", **opts)
    if kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, depends=depends,
                                   **options)
    raise ValueError(f"executor: {kind!r} is not one of {', '.join(EXECUTORS)}")


def curation_pipelines(files: list[dict], output_dir: str, *, tasks: int, columns: dict | None = None,
                       max_chars: int = 20000, near_threshold: float = 0.5, num_perm: int = 128,
                       finder_workers: int = 1) -> list[tuple[str, list, int]]:
    """The funnel as datatrove pipelines, in order: [(name, steps, tasks)]. Each pipeline depends on the one
    before; the readers of the three passes see the same files in the same order (the filters index by it)."""
    out = output_dir.rstrip("/")
    bands, rows = lsh_shape(near_threshold, num_perm)
    exact = ExactDedupConfig(content_getter=kit_normalised, document_priority=file_priority,
                             hash_config=HashConfig(precision=64, hash_fc="sha1"))
    minhash = MinhashConfig(n_grams=3, num_buckets=bands, hashes_per_bucket=rows, seed=1,
                            hash_config=HashConfig(precision=64))

    def reader(rejects: bool = False):
        return InstructionReader(files, columns=columns, max_chars=max_chars,
                                 rejects=FateWriter(f"{out}/dropped/ingest", "ingest") if rejects else None)

    return [
        ("exact_signatures", [reader(rejects=True),
                              ExactDedupSignature(f"{out}/work/exact/sigs", exact, finder_workers=finder_workers)], tasks),
        ("exact_find", [ExactFindDedups(f"{out}/work/exact/sigs", f"{out}/work/exact/dups", exact)], finder_workers),
        ("minhash_signatures", [reader(), ExactDedupFilter(f"{out}/work/exact/dups", exact),
                                KitMinhashSignature(f"{out}/work/minhash/sigs", minhash)], tasks),
        ("minhash_buckets", [MinhashDedupBuckets(f"{out}/work/minhash/sigs", f"{out}/work/minhash/buckets", config=minhash)],
         bands),
        ("minhash_cluster", [MinhashDedupCluster(f"{out}/work/minhash/buckets", f"{out}/work/minhash/clusters",
                                                 config=minhash, save_cluster_id=True),
                             ClusterFilesForEveryTask(f"{out}/work/minhash/clusters", tasks)], 1),
        ("filter", [reader(),
                    ExactDedupFilter(f"{out}/work/exact/dups", exact, exclusion_writer=FateWriter(
                        f"{out}/dropped/exact_dedup", "exact_dedup", "exact duplicate of an earlier row (same normalised text)")),
                    MinhashDedupFilter(f"{out}/work/minhash/clusters", load_cluster_ids=True, exclusion_writer=FateWriter(
                        f"{out}/dropped/near_dedup", "near_dedup",
                        f"near duplicate (MinHash LSH {bands}x{rows} on word trigrams, threshold {near_threshold})")),
                    FateWriter(f"{out}/kept", None)], tasks),
    ]


def _check(tasks, workers, finder_workers, num_perm, max_chars, near_threshold, executor) -> None:
    if executor not in EXECUTORS:
        raise ValueError(f"executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    for what, value in (("tasks", tasks), ("finder_workers", finder_workers), ("num_perm", num_perm),
                        ("max_chars", max_chars)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what}: must be a whole number >= 1, got {value!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or not (workers == -1 or workers >= 1):
        raise ValueError(f"workers: must be -1 (all) or a whole number >= 1, got {workers!r}")
    if isinstance(near_threshold, bool) or not isinstance(near_threshold, (int, float)) or not 0 < near_threshold <= 1:
        raise ValueError(f"near_threshold: must be in (0, 1], got {near_threshold!r}")


def build_executors(files: list[dict], output_dir: str, *, executor: str = "local", tasks: int = 4, workers: int = -1,
                    columns: dict | None = None, max_chars: int = 20000, near_threshold: float = 0.5,
                    num_perm: int = 128, finder_workers: int = 1, executor_options: dict | None = None) -> list:
    """One datatrove executor per pipeline of ``curation_pipelines``, each depending on the one before (running
    the last runs them all). Nothing runs here."""
    _check(tasks, workers, finder_workers, num_perm, max_chars, near_threshold, executor)
    out = output_dir.rstrip("/")
    chain = []
    for name, steps, n in curation_pipelines(files, out, tasks=tasks, columns=columns, max_chars=max_chars,
                                            near_threshold=near_threshold, num_perm=num_perm,
                                            finder_workers=finder_workers):
        chain.append(_executor(executor, steps, tasks=n, workers=workers, logging_dir=f"{out}/logs/{name}",
                               depends=chain[-1] if chain else None, name=name, options=dict(executor_options or {})))
    return chain


def run_distributed(sources: list[str], output_dir: str, *, tasks: int = 4, workers: int = -1,
                    executor: str = "local", columns: dict | None = None, max_chars: int = 20000,
                    near_threshold: float = 0.5, num_perm: int = 128, finder_workers: int = 1,
                    executor_options: dict | None = None) -> dict | None:
    """Run the funnel's ingest -> exact -> near stages over ``sources`` (files or folders of .jsonl .json .csv
    .parquet) on ``executor`` with ``tasks`` tasks (``workers`` at a time; -1: all). Returns ``summarize``'s
    counts when the run has finished here (local, ray); None for slurm (the jobs are queued: call
    ``summarize`` when they are done). ``executor_options`` go to the executor (slurm: partition, time,
    cpus_per_task, mem_per_cpu_gb, venv_path, sbatch_args; ray: cpus_per_task, mem_per_cpu_gb ...).
    A re-run into the same ``output_dir`` resumes (finished tasks are skipped); another run's folder is refused."""
    _check(tasks, workers, finder_workers, num_perm, max_chars, near_threshold, executor)
    files = plan_files(list(sources))
    params = dict(tasks=tasks, columns=columns, max_chars=max_chars, near_threshold=near_threshold, num_perm=num_perm,
                  finder_workers=finder_workers)
    run = {"files": files, **params}
    folder = get_datafolder(output_dir)
    if folder.exists("run.json"):
        with folder.open("run.json", "rt") as fh:
            if json.load(fh) != run:
                raise ValueError(f"{output_dir}: holds another run (run.json differs); use a new output folder")
    else:
        with folder.open("run.json", "wt") as fh:
            json.dump(run, fh, indent=1, ensure_ascii=False)
    chain = build_executors(files, output_dir, executor=executor, workers=workers, executor_options=executor_options,
                            **params)
    chain[-1].run()  # launches its dependencies first
    return None if executor == "slurm" else summarize(output_dir)


# ----------------------------------------------------------------------------------------------
# Reading a finished run
# ----------------------------------------------------------------------------------------------
def iter_fates(output_dir: str, part: str):
    """The rows written under ``OUT/part`` (``kept``, ``dropped/ingest``, ``dropped/exact_dedup``, ...)."""
    folder = get_datafolder(output_dir)
    if not folder.isdir(part):
        return
    for path in folder.list_files(subdirectory=part, glob_pattern="*.jsonl.gz"):
        with folder.open(path, "rt", compression="gzip") as fh:
            for line in fh:
                yield json.loads(line)


def summarize(output_dir: str, *, rows: bool = False) -> dict:
    """The funnel of a finished run: {"stages": [{"stage", "in", "out"}] as ``funnel.json`` has them, "kept",
    "dropped_by_stage", "by_source": {source: {"ingested", "kept"}}}; with ``rows``, also "dropped":
    {id: {"stage", "reason", "duplicate_of"}} (duplicate_of: the row it copies, for exact and near drops; this
    part holds every surviving row's hash in memory, so it is meant for checks, not for the full corpus)."""
    counts = Counter()
    ingested, kept_by = Counter(), Counter()
    by_hash, by_cluster, dropped = {}, {}, {}
    for part in ("kept", "dropped/near_dedup", "dropped/exact_dedup", "dropped/ingest"):
        for r in iter_fates(output_dir, part):
            stage = r["stage"] or "kept"
            counts[stage] += 1
            if stage != "ingest":
                ingested[r["source"]] += 1
                kept_by[r["source"]] += stage == "kept"
            if not rows:
                continue
            if stage in ("kept", "near_dedup"):
                by_hash.setdefault(r["text_hash"], r["id"])
            if stage == "kept" and r.get("minhash_cluster_id", -1) != -1:
                by_cluster[r["minhash_cluster_id"]] = r["id"]
            if stage != "kept":
                dropped[r["id"]] = {"stage": stage, "reason": r["reason"], "duplicate_of": (
                    by_cluster.get(r.get("minhash_cluster_id")) if stage == "near_dedup"
                    else by_hash.get(r.get("text_hash")) if stage == "exact_dedup" else None)}
    n = sum(counts.values())
    stages, left = [], n
    for stage in STAGES:
        stages.append({"stage": stage, "in": left, "out": left - counts[stage]})
        left -= counts[stage]
    out = {"stages": stages, "kept": counts["kept"], "dropped_by_stage": {s: counts[s] for s in STAGES if counts[s]},
           "by_source": {s: {"ingested": ingested[s], "kept": kept_by[s]} for s in sorted(ingested)}}
    if rows:
        out["dropped"] = dropped
    return out


# ----------------------------------------------------------------------------------------------
# python -m promedical.corpus.distributed
# ----------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        from promedical.core.ids import escape

        self.exit(2, escape(f"{self.prog}: error: {message} (see --help)") + "\n")


def _columns(text: str) -> dict:
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=NAME[,KEY=NAME...], got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m promedical.corpus.distributed",
                     description="Step 00's ingest -> exact -> near dedup on datatrove executors (local, Slurm, Ray). "
                                 "Writes OUT/kept and OUT/dropped/STAGE as JSONL and prints the funnel as JSON.")
    parser.add_argument("sources", nargs="*", help="files or folders of .jsonl .json .csv .parquet")
    parser.add_argument("--output", "-o", required=True, help="output folder (local or any fsspec URL datatrove takes)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument("--tasks", type=_positive, default=4, help="tasks of the reading passes (default 4)")
    parser.add_argument("--workers", type=int, default=-1, help="tasks at a time (default -1: all)")
    parser.add_argument("--columns", type=_columns, default=None, help="KEY=NAME,... as `promedical ingest --columns`")
    parser.add_argument("--max-chars", type=_positive, default=20000)
    parser.add_argument("--near-threshold", type=float, default=0.5)
    parser.add_argument("--num-perm", type=_positive, default=128)
    parser.add_argument("--finder-workers", type=_positive, default=1, help="tasks of the exact-dedup finder")
    parser.add_argument("--partition", help="slurm partition")
    parser.add_argument("--time", help="slurm time limit per task, e.g. 04:00:00")
    parser.add_argument("--venv-path", help="slurm: the virtualenv's activate script to source on the nodes")
    parser.add_argument("--cpus-per-task", type=_positive, help="slurm / ray")
    parser.add_argument("--mem-per-cpu-gb", type=float, help="slurm / ray")
    parser.add_argument("--summary", action="store_true", help="only print the funnel of the finished run in --output")
    args = parser.parse_args(argv)
    if args.summary:
        print(json.dumps(summarize(args.output), indent=1))
        return 0
    if not args.sources:
        parser.error("give at least one source (or --summary)")
    options = {k: v for k, v in (("partition", args.partition), ("time", args.time), ("venv_path", args.venv_path),
                                 ("cpus_per_task", args.cpus_per_task), ("mem_per_cpu_gb", args.mem_per_cpu_gb))
               if v is not None}
    if options and args.executor == "local":
        parser.error(f"--{next(iter(options)).replace('_', '-')} is for --executor slurm or ray")
    try:
        funnel = run_distributed(args.sources, args.output, tasks=args.tasks, workers=args.workers,
                                 executor=args.executor, columns=args.columns, max_chars=args.max_chars,
                                 near_threshold=args.near_threshold, num_perm=args.num_perm,
                                 finder_workers=args.finder_workers, executor_options=options)
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(funnel, indent=1) if funnel is not None else
          f"queued; when the jobs finish: python -m promedical.corpus.distributed --summary --output {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

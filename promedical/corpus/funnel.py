"""The funnel's artefacts: curated/train/bench tables, ``funnel.json``, the dataset card (Markdown with a
YAML header, as Hub dataset cards have), ``explain`` (why is this row gone?) and the JSONL export."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from promedical.core.files import atomic_write_text, dumps_line, write_json
from promedical.core.ids import escape, quote
from promedical.corpus.label import CLASSIFY_PROMPT, DIFFICULTY_PROMPT
from promedical.corpus.store import check_curation, data_dir, iter_batches, open_table, read_table, table_writer

KEEP_COLUMNS = ("id", "messages", "text", "split", "category", "specialty", "label_source", "difficulty",
                "difficulty_reason", "rubric", "lineage")


HEAVY_COLUMNS = ("messages", "text", "rubric")  # kept in Arrow through curation, never as Python objects
LINEAGE_FIELDS = ("source", "path", "row", "original_id", "format", "dropped_turns")


@dataclass
class Fates:
    """What curation decided, column-wise (positions = rows of instructions.parquet): the kept flag,
    (stage, reason, duplicate_of, score) of each dropped row, the split of each kept row, labels."""
    kept: np.ndarray
    fate: dict[int, tuple]
    split: np.ndarray
    category: list
    specialty: list
    difficulty: dict[int, tuple[int, str]] = field(default_factory=dict)
    llm_labelled: set[int] = field(default_factory=set)


def _curated_schema(instructions_schema):
    import pyarrow as pa

    s, light = pa.string(), [f for f in instructions_schema if f.name not in HEAVY_COLUMNS + ("category", "specialty")]
    return pa.schema(light + [pa.field("category", s), pa.field("specialty", s), pa.field("kept", pa.bool_()),
                              pa.field("stage", s), pa.field("reason", s), pa.field("duplicate_of", s),
                              pa.field("score", pa.float64()), pa.field("difficulty", pa.int64()),
                              pa.field("difficulty_reason", s), pa.field("label_source", s), pa.field("split", s),
                              pa.field("lineage", s)]
                     + [instructions_schema.field(h) for h in HEAVY_COLUMNS])


def _curated_batch(batch, start: int, fates: Fates, schema):
    """One batch of instructions.parquet with its rows' fates, as a curated.parquet table."""
    import pyarrow as pa

    n = batch.num_rows
    cols = {name: batch.column(name) for name in batch.schema.names}
    light = {k: cols[k].to_pylist() for k in LINEAGE_FIELDS}
    rows = range(start, start + n)
    fate = [fates.fate.get(i, (None, None, None, None)) for i in rows]
    category, specialty = fates.category[start:start + n], fates.specialty[start:start + n]
    source_category = cols["category"].to_pylist()
    diff = [fates.difficulty.get(i, (None, None)) for i in rows]
    data = {name: cols[name] for name in schema.names if name in cols and name not in ("category", "specialty")}
    data.update(category=category, specialty=specialty, kept=fates.kept[start:start + n],
                stage=[f[0] for f in fate], reason=[f[1] for f in fate], duplicate_of=[f[2] for f in fate],
                score=[f[3] for f in fate], difficulty=[d[0] for d in diff], difficulty_reason=[d[1] for d in diff],
                label_source=["llm" if i in fates.llm_labelled else "source" if c else None
                              for i, c in zip(rows, source_category)],
                split=list(fates.split[start:start + n]),
                lineage=[json.dumps({k: light[k][a] for k in LINEAGE_FIELDS}, ensure_ascii=False) for a in range(n)])
    return pa.table({name: data[name] for name in schema.names}, schema=schema)


def write_outputs(workspace, instructions: Path, fates: Fates, funnel: dict, audit: dict | None = None) -> None:
    """curated.parquet = every row of ``instructions`` (same order) with its fate; train/bench.parquet = the
    kept rows of each split; split_audit.json and the card (with ``audit``); funnel.json last. Written batch
    by batch (memory does not grow with the corpus). Every file carries ``funnel["curation"]``, so a
    curation killed half-way is seen as such (``store.check_curation``)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    d = data_dir(workspace)
    curation = funnel.get("curation")
    schema = _curated_schema(pq.read_schema(instructions))
    # nested so that curated.parquet is renamed into place first, then train, then bench
    with table_writer(d / "bench.parquet", _empty_schema(), curation) as bench, \
            table_writer(d / "train.parquet", _empty_schema(), curation) as train, \
            table_writer(d / "curated.parquet", schema, curation) as curated:
        start = 0
        for batch in iter_batches(instructions):
            table = _curated_batch(batch, start, fates, schema)
            curated.write_table(table)
            for split, writer in (("train", train), ("bench", bench)):
                mask = pc.fill_null(pc.and_(table["kept"], pc.equal(table["split"], split)), False)
                writer.write_table(table.filter(mask).select(list(KEEP_COLUMNS)).cast(_empty_schema()))
            start += batch.num_rows
    if audit is not None:
        write_json(d / "split_audit.json", audit)
        write_card(workspace, funnel, audit)
    write_json(d / "funnel.json", funnel)


def _empty_schema():
    import pyarrow as pa

    s = pa.string()
    return pa.schema([("id", s), ("messages", pa.list_(pa.struct([("role", s), ("content", s)]))), ("text", s),
                      ("split", s), ("category", s), ("specialty", s), ("label_source", s), ("difficulty", pa.int64()),
                      ("difficulty_reason", s), ("rubric", s), ("lineage", s)])


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def write_card(workspace, funnel: dict, audit: dict) -> Path:
    """W/data/README.md: YAML header (Hub dataset-card fields) + the funnel, counts, prompts and audit."""
    header = {"pretty_name": f"{Path(workspace).resolve().name} instructions (ProMedical Kit step 00)",
              "language": ["en"], "task_categories": ["question-answering", "text-generation"],
              "tags": ["medical", "promedical-kit"],
              "size_categories": [_size_category(funnel["train"] + funnel["bench"])],
              "source_datasets": sorted(funnel["by_source"]),
              "license": "other",
              "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "train.parquet"},
                                                                    {"split": "bench", "path": "bench.parquet"}]}]}
    cfg = funnel["config"]
    static = funnel.get("embedder") == "static"
    semantic = (f"static model distilled from all-MiniLM-L6-v2, cosine >= {cfg['static_threshold']}" if static
                else f"all-MiniLM-L6-v2 cosine >= {cfg['semantic_threshold']}")
    audit_cosine = (f"static-model cosine >= {cfg['static_threshold']}" if audit.get("embedder") == "static"
                    else f"MiniLM cosine >= {audit['thresholds']['embedding_cosine']}")
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# {header['pretty_name']}", "",
             "Curated by `promedical curate` (notebook `00_data`). The licence is `other`: each row keeps the "
             "licence of its source (see the lineage column); check them before publishing.", "",
             "## Funnel", "", "| stage | in | out | dropped |", "|---|---:|---:|---:|"]
    lines += [f"| {s['stage']} | {s['in']} | {s['out']} | {s['in'] - s['out']} |" for s in funnel["stages"]]
    lines += ["", f"Rows rejected at ingest (with their reasons in `rejects.jsonl`): {funnel['rejected_at_ingest']}.", "",
              "## Splits by category", "", "| category | train | bench |", "|---|---:|---:|"]
    lines += [f"| {c} | {v['train']} | {v['bench']} |" for c, v in funnel["by_category"].items()]
    lines += ["", "## Sources", "", "| source | ingested | kept |", "|---|---:|---:|"]
    lines += [f"| {s} | {v['ingested']} | {v['kept']} |" for s, v in funnel["by_source"].items()]
    lines += ["", "## Settings", "",
              f"- exact dedup: {cfg['exact_dedup']}; near dedup (MinHash LSH, word-trigram Jaccard >= "
              f"{cfg['near_threshold']}): {cfg['near_dedup']}; semantic dedup ({semantic}): "
              f"{cfg['semantic_dedup']}",
              f"- difficulty (keep {cfg['difficulty_band'][0]}-{cfg['difficulty_band'][1]}): {cfg['difficulty']}; "
              f"classification: {cfg['classify']}; labels by `{cfg['model']}` on `{cfg['backend']}`",
              f"- split: bench {cfg['bench_size'] if cfg['bench_size'] is not None else cfg['bench_fraction']} "
              f"stratified by category, seed {cfg['seed']}",
              "", "## Independence of the splits", "", f"Verdict: **{audit['verdict']}** "
              f"(exact / word-trigram Jaccard >= {audit['thresholds']['ngram_jaccard']} / "
              f"{audit_cosine}"
              f"{'' if audit['embeddings'] else ', embedding check off'}); "
              f"bench items sharing their first six words with a train item: {audit['counts']['template']}.",
              "", "## Label prompts", "", "Difficulty:", "", "```text", DIFFICULTY_PROMPT, "```", "",
              "Category and specialty:", "", "```text", CLASSIFY_PROMPT, "```", ""]
    return atomic_write_text(data_dir(workspace) / "README.md", "\n".join(lines))


def explain(workspace, item_id: str) -> dict:
    """Why a row is kept or gone: its curated record, or its ingest reject (``PATH:ROW``)."""
    d = data_dir(workspace)
    if not (d / "curated.parquet").is_file():
        raise FileNotFoundError(f"{d}: not curated yet; run `promedical curate --workspace {workspace}`")
    import pyarrow.compute as pc

    check_curation(workspace)
    table = open_table(d / "curated.parquet")
    hit = table.filter(pc.equal(table["id"], item_id)).to_pylist()
    if hit:
        r = hit[0]
        out = {"id": r["id"], "kept": r["kept"], "split": r["split"], "stage": r["stage"], "reason": r["reason"],
               "duplicate_of": r["duplicate_of"], "score": r["score"], "difficulty": r["difficulty"],
               "difficulty_reason": r["difficulty_reason"], "category": r["category"], "specialty": r["specialty"],
               "lineage": json.loads(r["lineage"])}
        out["line"] = escape(f"{r['id']}: kept in {r['split']} (category {r['category']}, specialty {r['specialty']}, "
                             f"difficulty {r['difficulty']})" if r["kept"] else f"{r['id']}: dropped at {r['stage']}: {r['reason']}")
        return out
    from promedical.corpus.ingest import read_rejects

    for rej in read_rejects(workspace):
        if f"{rej['source']}:{rej['row']}" == item_id:
            return {"id": item_id, "kept": False, "stage": "ingest", "reason": rej["reason"],
                    "line": escape(f"{item_id}: rejected at ingest: {rej['reason']}")}
    raise KeyError(f"no row {quote(item_id)} in {d} (ids look like SOURCE:ID; rejected rows like PATH:ROW)")


def export(workspace, out_path: str | Path) -> int:
    """Write the kept rows (both splits) as JSONL: id, messages, split, category, specialty, difficulty,
    difficulty_reason, rubric, lineage. Returns the number of rows."""
    out_path = Path(out_path)
    if out_path.exists() and not out_path.is_file():
        raise ValueError(f"{out_path}: exists and is not a regular file")
    from promedical.corpus.store import read_instructions

    rows = read_instructions(workspace, None)
    fields_ = ("id", "messages", "split", "category", "specialty", "difficulty", "difficulty_reason", "rubric", "lineage")
    atomic_write_text(out_path, "".join(dumps_line({k: r.get(k) for k in fields_}) for r in rows))
    return len(rows)


def read_funnel(workspace) -> dict:
    path = data_dir(workspace) / "funnel.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not curated yet")
    check_curation(workspace)
    return json.loads(path.read_text(encoding="utf-8"))


def funnel_figure(funnel: dict):
    """A plotly funnel chart of the stages (rows in -> rows out)."""
    import plotly.graph_objects as go

    stages = funnel["stages"]
    names = [stages[0]["stage"] + " (rows read)"] + [s["stage"] for s in stages]
    values = [stages[0]["in"]] + [s["out"] for s in stages]
    fig = go.Figure(go.Funnel(y=names, x=values, textinfo="value+percent initial"))
    fig.update_layout(title="Curation funnel", margin=dict(l=160, r=20, t=50, b=20), height=420)
    return fig


__all__ = ["write_outputs", "write_card", "explain", "export", "read_funnel", "funnel_figure", "read_table"]

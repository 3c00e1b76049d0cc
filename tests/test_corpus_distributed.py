"""Step 00's non-LLM funnel on datatrove (promedical.corpus.distributed) against the single-machine path
(promedical.corpus.step.curate): the shipped samples and a synthetic corpus with planted exact and near copies,
run by datatrove's LocalPipelineExecutor with several tasks on two worker processes; and the module's CLI."""
import csv
import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from promedical.core.text import ngram_jaccard
from promedical.corpus.config import DataConfig
from promedical.corpus.distributed import build_executors, plan_files, run_distributed, summarize
from promedical.corpus.ingest import ingest
from promedical.corpus.step import curate

SAMPLES = [str(ROOT / "data" / "samples" / "sharegpt_sample.jsonl"), str(ROOT / "data" / "samples" / "medqa_sample.csv")]
FAST = dict(semantic_dedup=False, difficulty=False, classify=False, decontam_embeddings=False)
DEDUP_STAGES = ("exact_dedup", "near_dedup")


def single_machine(sources, ws):
    """The default path: ingest + curate (no models); the funnel's first stages and each dropped row's fate."""
    ingest(sources, ws)
    funnel = curate(ws, DataConfig(**FAST), progress=False)
    stages = [{k: s[k] for k in ("stage", "in", "out")} for s in funnel["stages"]
              if s["stage"] in ("ingest",) + DEDUP_STAGES]
    dropped = {r["id"]: (r["stage"], r["duplicate_of"]) for r in pq.read_table(ws / "data" / "curated.parquet").to_pylist()
               if not r["kept"] and r["stage"] in DEDUP_STAGES}
    return stages, funnel["by_source"], dropped


def distributed_fates(out) -> dict:
    return {i: (d["stage"], d["duplicate_of"]) for i, d in summarize(str(out), rows=True)["dropped"].items()
            if d["stage"] in DEDUP_STAGES}


@pytest.mark.multiprocess
def test_samples_funnel_matches_the_single_machine_path(tmp_path):
    stages, by_source, dropped = single_machine(SAMPLES, tmp_path / "ws")
    assert [(s["stage"], s["in"], s["out"]) for s in stages] == [("ingest", 23, 14), ("exact_dedup", 14, 11),
                                                                 ("near_dedup", 11, 9)]
    # 3 tasks over 2 files (one task reads nothing), 2 worker processes
    funnel = run_distributed(SAMPLES, str(tmp_path / "dt"), tasks=3, workers=2)
    assert funnel["stages"] == stages  # 23 read -> 14 -> 11 -> 9, stage by stage
    assert funnel["kept"] == 9 and funnel["by_source"] == by_source
    # the same rows go, at the same stage, as copies of the same rows (mq-008 copies sg-015 across files)
    assert distributed_fates(tmp_path / "dt") == dropped
    # the ingest rejects carry ingest's reasons, as PATH:ROW
    rejects = {i: d["reason"] for i, d in summarize(str(tmp_path / "dt"), rows=True)["dropped"].items()
               if d["stage"] == "ingest"}
    assert len(rejects) == 9 and rejects[f"{SAMPLES[1]}:6"] == "wrong number of fields: 3 (header has 7)"
    assert rejects[f"{SAMPLES[0]}:14"] == "duplicate id 'sg-013' (first on row 13)"
    # kept rows keep what step 01 needs: id, messages, the instruction text and the lineage
    kept = [json.loads(line) for f in sorted((tmp_path / "dt" / "kept").glob("*.jsonl.gz")) for line in gzip.open(f, "rt")]
    sg3 = next(r for r in kept if r["id"] == "sharegpt_sample:sg-003")
    assert [m["role"] for m in sg3["messages"]] == ["user", "assistant", "user"] and sg3["row"] == 3
    assert sg3["text"].startswith("user: I take warfarin")
    # a second run into the same folder resumes (every task done: nothing runs) and gives the same funnel;
    # another run's folder is refused
    assert run_distributed(SAMPLES, str(tmp_path / "dt"), tasks=3, workers=2) == funnel
    with pytest.raises(ValueError, match="holds another run"):
        run_distributed(SAMPLES[:1], str(tmp_path / "dt"), tasks=3, workers=2)


VOCAB = [f"{a}{b}" for a in ("cardio", "derma", "neuro", "gastro", "pulmo", "nephro", "hepato", "osteo", "haemo",
                             "endo", "onco", "uro", "gyn", "oto", "ophthal", "psych")
         for b in ("logy", "pathy", "itis", "algia", "ectomy", "scopy", "plasty", "oma", "osis", "emia", "genic",
                   "tomy", "graphy", "rrhea", "lysis", "cyte", "gram", "stasis", "trophy", "penia")]  # 320 words


def synthetic_corpus(folder, n=3000, seed=7):
    """n originals (40 random words each, so no two are near) in four files of three formats, plus planted
    copies later in the order: exact copies (case and spacing changed) and near copies (one word changed in
    the middle: word-trigram Jaccard 35/41 = 0.85), some in the same file, some in a later one; and three
    chains A, B, C (windows of 60 words moved by 10: Jaccard A-B = B-C = 0.71, A-C = 0.49 < 0.5)."""
    rng = random.Random(seed)
    originals = [{"id": f"o{i:05d}", "prompt": " ".join(rng.choice(VOCAB) for _ in range(40)) + "?"} for i in range(n)]
    files = [originals[k::4] for k in range(4)]
    planted = {}  # copy id -> (stage, original id)
    for k, src in enumerate(rng.sample(range(n), 300)):  # distinct originals: copies never copy each other
        o = originals[src]
        text = o["prompt"]
        if k % 2 == 0:
            copy, stage = "  " + text.upper().replace(" ", "   ") + " ", "exact_dedup"
        else:
            words = text.split()
            words[20] = "zz" + words[20]
            copy, stage = " ".join(words), "near_dedup"
        cid = f"c{k:04d}"
        files[min(3, src % 4 + k % 2)].append({"id": cid, "prompt": copy})  # its own file or the next one
        planted[cid] = (stage, o["id"])
    chains, chain_text = [], {}
    for k in range(3):
        long = [rng.choice(VOCAB) for _ in range(80)]
        ids = [f"chain{k}-{x}" for x in "abc"]
        for j, cid in enumerate(ids):
            chain_text[cid] = " ".join(long[10 * j:10 * j + 60])
            files[3].append({"id": cid, "prompt": chain_text[cid]})
        chains.append(ids)
    folder.mkdir()
    with open(folder / "a.jsonl", "w") as fh:  # OpenAI messages, with an answer turn that ingest drops
        for r in files[0]:
            fh.write(json.dumps({"id": r["id"], "messages": [{"role": "user", "content": r["prompt"]},
                                                             {"role": "assistant", "content": "ok"}]}) + "\n")
    (folder / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in files[1]))
    pq.write_table(pa.Table.from_pylist(files[2]), folder / "c.parquet")
    with open(folder / "d.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "prompt"])
        w.writeheader()
        w.writerows(files[3])
    return [str(folder / f) for f in ("a.jsonl", "b.jsonl", "c.parquet", "d.csv")], planted, chains, chain_text


@pytest.mark.multiprocess
def test_planted_copies_go_and_originals_stay(tmp_path):
    sources, planted, chains, chain_text = synthetic_corpus(tmp_path / "src")
    stages, by_source, dropped = single_machine(sources, tmp_path / "ws")
    funnel = run_distributed(sources, str(tmp_path / "dt"), tasks=3, workers=2)  # 4 files over 3 tasks
    fates = {i.split(":", 1)[1]: f for i, f in distributed_fates(tmp_path / "dt").items()}  # ids are SOURCE:ID
    kit = {i.split(":", 1)[1]: f for i, f in dropped.items()}
    n_read = 3000 + 300 + 9
    assert funnel["stages"][0] == {"stage": "ingest", "in": n_read, "out": n_read} == stages[0]
    # exact dedup: the same count and the same rows as the single-machine path; every planted exact copy goes as
    # a copy of its original, which stays
    assert funnel["stages"][1] == stages[1] == {"stage": "exact_dedup", "in": n_read, "out": n_read - 150}
    assert {i: f for i, f in fates.items() if f[0] == "exact_dedup"} == {i: f for i, f in kit.items() if f[0] == "exact_dedup"}
    # near dedup: every planted near copy goes as a copy of its original; the originals stay
    for cid, (stage, orig) in planted.items():
        assert fates[cid][0] == stage and fates[cid][1].endswith(f":{orig}"), (cid, fates[cid])
    assert not any(i.startswith("o") for i in fates)  # no original dropped
    # where the two paths differ, by design: a chain A-B-C (A-B and B-C at or above 0.5, A-C below). The kit
    # drops B as a copy of A, then compares C with the rows it kept (A: 0.49) and keeps it. datatrove links the
    # bucket matches into one cluster A-B-C and keeps one row of it, the union-find root (here A or B; not
    # always the earliest row), dropping the other two as copies of it
    kit_near = {i: f for i, f in kit.items() if f[0] == "near_dedup"}
    near = {i: f for i, f in fates.items() if f[0] == "near_dedup"}
    for a, b, c in chains:
        assert b in kit_near and kit_near[b][1].endswith(f":{a}") and a not in kit and c not in kit
        gone = {x for x in (a, b, c) if x in near}
        (root,) = {a, b, c} - gone
        assert len(gone) == 2 and all(near[x][1].endswith(f":{root}") for x in gone)
    chain_ids = {x for chain in chains for x in chain}
    assert {i: f for i, f in kit_near.items() if i not in chain_ids} == {i: f for i, f in near.items() if i not in chain_ids}
    for a, b, c in chains:
        assert ngram_jaccard(chain_text[a], chain_text[b]) >= 0.5 > ngram_jaccard(chain_text[a], chain_text[c])
    assert funnel["stages"][2]["out"] == stages[2]["out"] - len(chains)
    assert funnel["kept"] == n_read - 150 - 150 - 2 * len(chains)
    assert sum(v["kept"] for v in funnel["by_source"].values()) == funnel["kept"]


def test_executors_chain_for_slurm_and_ray(tmp_path):
    """The same pipelines under each executor: six, each depending on the one before, with the task counts
    the stages need (buckets: one task per LSH band; finder and cluster: one). Nothing runs (ray is not
    installed here: only its executor is built)."""
    files = plan_files(SAMPLES)
    assert files == [{"path": SAMPLES[0], "source": "sharegpt_sample"}, {"path": SAMPLES[1], "source": "medqa_sample"}]
    for kind in ("local", "slurm", "ray"):
        chain = build_executors(files, str(tmp_path / kind), executor=kind, tasks=8, workers=4,
                                executor_options={"partition": "cpu"} if kind == "slurm" else None)
        assert [e.world_size for e in chain] == [8, 1, 8, 25, 1, 8]
        assert [e.depends for e in chain] == [None] + chain[:-1]
        assert type(chain[0]).__name__ == {"local": "LocalPipelineExecutor", "slurm": "SlurmPipelineExecutor",
                                           "ray": "RayPipelineExecutor"}[kind]
    with pytest.raises(ValueError, match="executor"):
        build_executors(files, str(tmp_path / "x"), executor="mpi")
    with pytest.raises(ValueError, match="save it as Parquet"):
        plan_files(["hf:org/name"])


FAKE_SLURM = {  # stand-ins for Slurm's commands: sbatch runs the array's tasks here, in order, before it returns
    "sbatch": """#!/bin/bash
offset=0
for a in "$@"; do case "$a" in --export=*RUN_OFFSET=*) offset="${a##*RUN_OFFSET=}";; esac; done
script="${@: -1}"
read lo hi <<< "$(sed -n 's/^#SBATCH --array=\\([0-9]*\\)-\\([0-9]*\\).*/\\1 \\2/p' "$script")"
n=$(( $(cat "$FAKE_SLURM_DIR/jobs" 2>/dev/null || echo 0) + 1 )); echo $n > "$FAKE_SLURM_DIR/jobs"
cp "$script" "$FAKE_SLURM_DIR/job$n.sbatch"
for i in $(seq ${lo:-0} ${hi:-0}); do
  SLURM_ARRAY_TASK_ID=$i RUN_OFFSET=$offset SLURM_JOB_ID=$n bash "$script" >> "$FAKE_SLURM_DIR/job$n.log" 2>&1 || exit 1
done
echo "Submitted batch job $n"
""",
    "srun": """#!/bin/bash
while [ $# -gt 0 ]; do case "$1" in -n) shift 2;; -*) shift;; *) break;; esac; done
exec "$@"
""",
    "scontrol": "#!/bin/bash\necho localhost\n",
}


@pytest.mark.subprocess
def test_slurm_executor_runs_the_same_funnel(tmp_path, monkeypatch):
    """datatrove's SlurmPipelineExecutor as on a cluster (pickled pipelines, sbatch array scripts, job
    dependencies), with sbatch/srun/scontrol stood in for: the same funnel as the local executor's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("SLURM_NODELIST", "localhost")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path))
    out = tmp_path / "dt"
    queued = run_distributed(SAMPLES, str(out), tasks=2, executor="slurm",
                             executor_options={"partition": "cpu", "time": "00:10:00", "tasks_per_job": 32})
    assert queued is None  # on Slurm the jobs are queued; summarize reads the run when they are done
    funnel = summarize(str(out))
    assert [(s["stage"], s["in"], s["out"]) for s in funnel["stages"]] == [("ingest", 23, 14), ("exact_dedup", 14, 11),
                                                                           ("near_dedup", 11, 9)]
    assert set(distributed_fates(out)) == {"sharegpt_sample:sg-004", "sharegpt_sample:sg-005", "medqa_sample:mq-003",
                                           "medqa_sample:mq-004", "medqa_sample:mq-008"}
    scripts = sorted(tmp_path.glob("job*.sbatch"), key=lambda p: int(p.stem[3:]))
    first = scripts[0].read_text()
    assert "#SBATCH --partition=cpu" in first and "#SBATCH --array=0-0" in first and "launch_pickled_pipeline" in first
    assert (out / "logs" / "exact_signatures" / "executor.pik").is_file()


@pytest.mark.subprocess
def test_cli_help_and_one_line_errors(tmp_path):
    run = [sys.executable, "-m", "promedical.corpus.distributed"]
    out = subprocess.run(run + ["--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "--executor" in out.stdout and "slurm" in out.stdout
    for args, why in ((["x.jsonl", "-o", str(tmp_path), "--executor", "mpi"], "invalid choice"),
                      ([str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o")], "no such file"),
                      ([SAMPLES[0], "-o", str(tmp_path / "o"), "--tasks", "0"], "whole number"),
                      ([SAMPLES[0], "-o", str(tmp_path / "o"), "--partition", "cpu"], "for --executor slurm")):
        res = subprocess.run(run + args, capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and why in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr

"""Step 00 throughput: the non-LLM funnel at growing corpus sizes, and the OpenAI backend's concurrency.

    python benchmarks/curation.py [--sizes 10000 30000 100000] [--semantic-max 30000] [--openai]
    python benchmarks/curation.py --curate [--sizes ...]   # the CLI's own path: ingest + curate, no models

Funnel: for each size a fresh process writes N synthetic instructions (about 60 words each, 5% exact
copies with case/whitespace changes, 5% near copies with two words replaced) as JSONL and runs
ingest -> exact dedup -> MinHash near dedup -> semantic dedup (all-MiniLM-L6-v2 embeddings + blocked
cosine), timing each stage. Prints rows/s per stage, the process's peak RSS and the scaling exponent
k of seconds ~ N^k (least squares on log-log) per stage. Sizes above --semantic-max skip the semantic
stage and its time is extrapolated from the measured sizes with the fitted exponent (marked "extrap.").

--openai: starts tests/openai_server.py (tiny-qwen3) and sends the difficulty-label prompt at
concurrency 1 and 64 through OpenAICompatibleLLM, with the server answering at once (--delay 0) and
after 0.5 s (a remote server's latency). The test server generates one request at a time (its model
lock), so concurrency overlaps latency there; a vLLM server also batches the generation itself.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("patient fever cough rash headache nausea fatigue dizziness swelling itching numbness wheeze cramps bruising "
         "insomnia palpitations tremor thirst weakness stiffness tingling hoarseness sweating chills jaundice bloating "
         "heartburn constipation diarrhoea vomiting fainting chest pain abdomen knee back neck shoulder ankle wrist "
         "skin eye ear throat tooth blood urine stool sleep appetite weight mood anxiety memory vision hearing "
         "breathing walking eating drinking working running since yesterday morning evening night week month year "
         "after before during while taking stopping starting doctor nurse pharmacist hospital clinic test scan result "
         "tablet dose insulin inhaler antibiotic statin aspirin paracetamol ibuprofen warfarin metformin sertraline "
         "pregnant child baby elderly mother father daughter son husband wife friend worried should could would what "
         "when which how normal serious urgent safe dangerous better worse same often rarely sudden gradual mild "
         "severe left right upper lower both side").split()


def synthetic(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    while len(rows) < n:
        k = len(rows)
        r = rng.random()
        if r < 0.05 and rows:  # exact copy up to case and spacing
            src = rows[rng.randrange(len(rows))]["prompt"]
            text = src.upper() if rng.random() < 0.5 else src.replace(" ", "  ", 3)
        elif r < 0.10 and rows:  # near copy: two words replaced
            words = rows[rng.randrange(len(rows))]["prompt"].split()
            for _ in range(2):
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            text = " ".join(words)
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(60)) + "?"
        rows.append({"id": f"s{k}", "prompt": text})
    return rows


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(n: int, semantic: bool) -> dict:
    """One size in this process: stage seconds, drops and peak memory."""
    import pyarrow.parquet as pq

    from promedical.corpus.dedup import embed_texts, exact_duplicates, near_duplicates, semantic_duplicates
    from promedical.corpus.ingest import ingest
    from promedical.corpus.store import data_dir

    out: dict = {"n": n, "seconds": {}, "dropped": {}}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "corpus.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in synthetic(n)))
        ws = Path(tmp) / "ws"
        t = time.perf_counter()
        ingest([str(src)], ws)
        out["seconds"]["ingest"] = time.perf_counter() - t
        texts = pq.read_table(data_dir(ws) / "instructions.parquet", columns=["text"])["text"].to_pylist()
        out["ingested"] = len(texts)
        t = time.perf_counter()
        exact = exact_duplicates(texts)
        out["seconds"]["exact"] = time.perf_counter() - t
        t = time.perf_counter()
        near = near_duplicates(texts, skip=set(exact))
        out["seconds"]["minhash"] = time.perf_counter() - t
        out["dropped"].update(exact=len(exact), minhash=len(near))
        out["rss_before_semantic_mib"] = round(peak_rss_mib())
        if semantic:
            alive = [i for i in range(len(texts)) if i not in exact and i not in near]
            t = time.perf_counter()
            emb = embed_texts([texts[i] for i in alive])
            out["seconds"]["embed"] = time.perf_counter() - t
            t = time.perf_counter()
            sem = semantic_duplicates(emb)
            out["seconds"]["cosine"] = time.perf_counter() - t
            out["dropped"]["semantic"] = len(sem)
    out["peak_rss_mib"] = round(peak_rss_mib())
    return out


def run_curate(n: int) -> dict:
    """The tool's own path without models: `ingest` then `curate` with semantic dedup and LLM labels off."""
    from promedical.corpus.config import DataConfig
    from promedical.corpus.ingest import ingest
    from promedical.corpus.step import curate

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "corpus.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in synthetic(n)))
        t = time.perf_counter()
        ingest([str(src)], Path(tmp) / "ws")
        funnel = curate(Path(tmp) / "ws", DataConfig(semantic_dedup=False, difficulty=False, classify=False,
                                                     decontam_embeddings=False), progress=False)
        return {"n": n, "seconds": round(time.perf_counter() - t, 1), "train": funnel["train"],
                "bench": funnel["bench"], "peak_rss_mib": round(peak_rss_mib())}


def fit_exponent(ns, secs) -> float | None:
    import numpy as np

    pts = [(n, s) for n, s in zip(ns, secs) if s and s > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def funnel_benchmark(sizes: list[int], semantic_max: int) -> None:
    import torch

    results = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--one", str(n)] + (["--no-semantic"] if n > semantic_max else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            sys.exit(f"size {n} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"done {n}: {results[-1]}", file=sys.stderr, flush=True)
    stages = ["ingest", "exact", "minhash", "embed", "cosine"]
    print(f"cpu threads={torch.get_num_threads()} os.cpu_count={os.cpu_count()}")
    print("| rows | " + " | ".join(f"{s} rows/s" for s in stages) + " | total s | peak RSS MiB | dropped exact/minhash/semantic |")
    print("|---:|" + "---:|" * (len(stages) + 3))
    exps = {}
    for s in stages:
        measured = [(r["n"], r["seconds"][s]) for r in results if s in r["seconds"]]
        exps[s] = fit_exponent([m[0] for m in measured], [m[1] for m in measured])
    for r in results:
        cells, total, extrap = [], 0.0, False
        for s in stages:
            sec = r["seconds"].get(s)
            if sec is None:
                ref = max((x for x in results if s in x["seconds"]), key=lambda x: x["n"], default=None)
                if ref is None or exps[s] is None:
                    cells.append("-")
                    continue
                sec = ref["seconds"][s] * (r["n"] / ref["n"]) ** exps[s]
                extrap = True
                cells.append(f"{r['n'] / sec:,.0f} (extrap.)")
            else:
                cells.append(f"{r['n'] / sec:,.0f}")
            total += sec
        d = r["dropped"]
        print(f"| {r['n']:,} | " + " | ".join(cells) + f" | {total:,.0f}{' (extrap.)' if extrap else ''} | "
              f"{r['peak_rss_mib']:,} | {d['exact']}/{d['minhash']}/{d.get('semantic', '-')} |")
    totals = [(r["n"], sum(r["seconds"].values())) for r in results if "embed" in r["seconds"]]
    exps["total (measured sizes)"] = fit_exponent([t[0] for t in totals], [t[1] for t in totals])
    print("scaling exponent k (seconds ~ N^k): " + ", ".join(f"{s} {e:.2f}" for s, e in exps.items() if e is not None))


def openai_benchmark(n_prompts: int = 64) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_llm import READY_TIMEOUT, Server

    from promedical.corpus.label import difficulty_messages, difficulty_schema
    from promedical.models.llm import GenParams, OpenAICompatibleLLM

    texts = [r["prompt"][:300] for r in synthetic(n_prompts, seed=1)]
    params = GenParams(max_new_tokens=24, json_schema=difficulty_schema())
    print("| server delay s | concurrency | prompts | seconds | requests/s | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    for delay in (0.0, 0.5):
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(f"bench{delay}", ["--delay", str(delay)], Path(tmp))
            try:
                server.wait_ready(time.monotonic() + READY_TIMEOUT)
                base = None
                for conc in (1, 64):
                    llm = OpenAICompatibleLLM(server.base_url, "tiny-qwen3", concurrency=conc)
                    llm.generate([difficulty_messages("warm-up")], params)
                    prompts = [difficulty_messages(f"{t} #{conc}") for t in texts]  # distinct: no server-side reuse
                    t0 = time.perf_counter()
                    llm.generate(prompts, params)
                    sec = time.perf_counter() - t0
                    base = base or sec
                    print(f"| {delay} | {conc} | {n_prompts} | {sec:.1f} | {n_prompts / sec:.1f} | {base / sec:.1f}x |",
                          flush=True)
            finally:
                server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    ap.add_argument("--semantic-max", type=int, default=30_000,
                    help="largest size that runs the semantic stage (larger ones are extrapolated)")
    ap.add_argument("--openai", action="store_true", help="also measure the OpenAI backend at concurrency 1 vs 64")
    ap.add_argument("--skip-funnel", action="store_true")
    ap.add_argument("--curate", action="store_true", help="time `ingest` + `curate` (no semantic, no LLM) per size")
    ap.add_argument("--curate-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-semantic", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, not args.no_semantic)))
        return
    if args.curate_one:
        print(json.dumps(run_curate(args.curate_one)))
        return
    if args.curate:
        print("| rows | ingest + curate s (no semantic, no LLM) | rows/s | peak RSS MiB |\n|---:|---:|---:|---:|")
        for n in args.sizes:
            proc = subprocess.run([sys.executable, __file__, "--curate-one", str(n)], capture_output=True, text=True,
                                  cwd=ROOT)
            if proc.returncode:
                sys.exit(f"size {n} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {n:,} | {r['seconds']} | {n / r['seconds']:,.0f} | {r['peak_rss_mib']:,} |", flush=True)
        return
    if not args.skip_funnel:
        funnel_benchmark(args.sizes, args.semantic_max)
    if args.openai:
        openai_benchmark()


if __name__ == "__main__":
    main()

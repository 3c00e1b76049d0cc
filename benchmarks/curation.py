"""Step 00 at scale: the non-LLM funnel from 10k to 1M instructions, the semantic stage old vs new, its
calibration against MiniLM, and the OpenAI backend's concurrency.

    python benchmarks/curation.py --sizes 10000,100000,1000000      # the funnel table (a fresh process a size)
    python benchmarks/curation.py --compare 10000                   # semantic stage: MiniLM exact vs static ANN
    python benchmarks/curation.py --calibrate                       # static threshold vs MiniLM cosine >= 0.9
    python benchmarks/curation.py --openai                          # label requests at concurrency 1 vs 64

Funnel: for each size a fresh process writes N synthetic instructions as JSONL (25-80 words drawn from the
whole-word vocabulary of all-MiniLM-L6-v2 with Zipf weights; 4% exact copies with case/spacing changes,
4% near copies with two words replaced, 3% loose copies with 15% of the words dropped and neighbours
swapped: trigram Jaccard < 0.5, caught by the semantic stage) and runs the kit's own ``ingest`` and
``curate`` (LLM stages off; ``embedder=static`` at every size so the fit compares like with like).
Prints rows/s per stage, the process's peak RSS, the drops, and the exponent k of seconds ~ N^k per stage
(least squares on log-log over the sizes).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAIRS = ROOT / "data" / "calibration" / "semantic_pairs.jsonl"
SAMPLES = [str(ROOT / "data" / "samples" / "sharegpt_sample.jsonl"), str(ROOT / "data" / "samples" / "medqa_sample.csv")]
DEMO = [str(ROOT / "data" / "train" / "rubrics.jsonl"), str(ROOT / "data" / "bench" / "rubrics.jsonl")]


def _vocabulary() -> list[str]:
    from promedical.core.audit import embedding_model_dir

    words = (embedding_model_dir() / "vocab.txt").read_text(encoding="utf-8").split()
    return [w for w in words if re.fullmatch(r"[a-z]{3,}", w)]


def synthetic(n: int, seed: int = 0):
    """N rows {"id", "prompt"}, streamed (the generator holds only the rows copies are made from)."""
    rng = random.Random(seed)
    vocab = _vocabulary()
    weights = [1 / (k + 10) for k in range(len(vocab))]
    cum = list(__import__("itertools").accumulate(weights))
    pool: list[str] = []  # recent originals, the sources of copies
    for k in range(n):
        r = rng.random()
        if r < 0.04 and pool:  # exact copy up to case and spacing
            src = rng.choice(pool)
            text = src.upper() if rng.random() < 0.5 else src.replace(" ", "  ", 3)
        elif r < 0.08 and pool:  # near copy: two words replaced
            words = rng.choice(pool).split()
            for _ in range(2):
                words[rng.randrange(len(words))] = rng.choices(vocab, cum_weights=cum)[0]
            text = " ".join(words)
        elif r < 0.11 and pool:  # loose copy: 15% of the words dropped, neighbours swapped
            words = [w for w in rng.choice(pool).split() if rng.random() > 0.15]
            for _ in range(len(words) // 4):
                i = rng.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
            text = " ".join(words)
        else:
            text = " ".join(rng.choices(vocab, cum_weights=cum, k=rng.randint(25, 80))).capitalize() + "?"
            pool.append(text)
            if len(pool) > 5000:
                pool.pop(rng.randrange(len(pool)))
        yield {"id": f"s{k}", "prompt": text}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(n: int) -> dict:
    """One size in this process: ingest + curate, each stage's seconds, drops and peak memory."""
    from promedical.corpus.config import DataConfig
    from promedical.corpus.ingest import ingest
    from promedical.corpus.step import curate

    out: dict = {"n": n}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "corpus.jsonl"
        with src.open("w") as fh:
            for row in synthetic(n):
                fh.write(json.dumps(row) + "\n")
        ws = Path(tmp) / "ws"
        t = time.perf_counter()
        ingest([str(src)], ws)
        out["seconds"] = {"ingest": time.perf_counter() - t}
        t = time.perf_counter()
        funnel = curate(ws, DataConfig(difficulty=False, classify=False, embedder="static"), progress=False)
        total = time.perf_counter() - t
        stages = {"exact_dedup": "exact", "near_dedup": "minhash", "semantic_dedup": "semantic", "split": "split",
                  "decontaminate": "decontaminate"}
        for stage, name in stages.items():
            out["seconds"][name] = funnel["seconds"][stage]
        out["seconds"]["audit+write"] = max(total - sum(funnel["seconds"].values()), 1e-3)
        out["dropped"] = funnel["dropped_by_stage"]
        out["train"], out["bench"], out["verdict"] = funnel["train"], funnel["bench"], funnel["audit_verdict"]
    out["peak_rss_mib"] = round(peak_rss_mib())
    return out


def fit_exponent(ns, secs) -> float | None:
    import numpy as np

    pts = [(n, s) for n, s in zip(ns, secs) if s and s > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def funnel_benchmark(sizes: list[int]) -> None:
    results = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            sys.exit(f"size {n} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"done {n}: {json.dumps(results[-1])}", file=sys.stderr, flush=True)
    stages = list(results[0]["seconds"])
    print("| rows | " + " | ".join(f"{s} rows/s" for s in stages) + " | total s | peak RSS MiB | dropped exact/near/semantic |")
    print("|---:|" + "---:|" * (len(stages) + 3))
    for r in results:
        d = r["dropped"]
        print(f"| {r['n']:,} | " + " | ".join(f"{r['n'] / max(r['seconds'][s], 1e-3):,.0f}" for s in stages)
              + f" | {sum(r['seconds'].values()):,.0f} | {r['peak_rss_mib']:,} | "
              f"{d.get('exact_dedup', 0)}/{d.get('near_dedup', 0)}/{d.get('semantic_dedup', 0)} |")
    ns = [r["n"] for r in results]
    exps = {s: fit_exponent(ns, [r["seconds"][s] for r in results]) for s in stages}
    exps["total"] = fit_exponent(ns, [sum(r["seconds"].values()) for r in results])
    print("scaling exponent k (seconds ~ N^k): " + ", ".join(f"{s} {e:.2f}" for s, e in exps.items() if e is not None))


def compare_semantic(n: int) -> None:
    """The semantic stage on the same n rows: MiniLM + exact search (before) vs static + ANN (now)."""
    from promedical.corpus.dedup import semantic_duplicates
    from promedical.corpus.embeddings import CENTRED_FLOOR, STATIC_THRESHOLD, minilm_embed, static_embed

    texts = [r["prompt"] for r in synthetic(n, seed=3)]
    runs = {}
    for name, embed, thr, index, floor in (("MiniLM + exact (before)", minilm_embed, 0.9, "exact", None),
                                           ("static + usearch ANN (now)", static_embed, STATIC_THRESHOLD, "ann",
                                            CENTRED_FLOOR)):
        t = time.perf_counter()
        emb = embed(texts)
        t_embed = time.perf_counter() - t
        t = time.perf_counter()
        dups = semantic_duplicates(emb, threshold=thr, index=index, centred_floor=floor)
        runs[name] = (t_embed, time.perf_counter() - t, dups)
    print(f"| semantic stage, {n:,} rows | embed s | search s | rows/s | dropped |\n|---|---:|---:|---:|---:|")
    for name, (te, ts, dups) in runs.items():
        print(f"| {name} | {te:.1f} | {ts:.1f} | {n / (te + ts):,.0f} | {len(dups)} |")
    (_, _, old), (_, _, new) = runs.values()
    both = set(old) & set(new)
    print(f"agreement on dropped rows: {len(both)} in both, {len(set(old) - set(new))} only before, "
          f"{len(set(new) - set(old))} only now (recall {len(both) / max(len(old), 1):.3f}, "
          f"precision {len(both) / max(len(new), 1):.3f} against MiniLM exact)")


def calibrate() -> None:
    """Static-model cosine vs the reference (MiniLM fp32 cosine >= 0.9) on the calibration pairs and every
    pair of the samples' instructions: recall and precision per static threshold, alone and with the
    centred-cosine floor; and the pairs of the demo corpus (90 rows, none at MiniLM >= 0.9) each flags."""
    import numpy as np

    from promedical.corpus.embeddings import CENTRED_FLOOR, STATIC_THRESHOLD, minilm_embed, static_embed
    from promedical.corpus.ingest import iter_rows

    def centred(x, mean):
        y = x - mean
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    pairs = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    a, b, kinds = [p["a"] for p in pairs], [p["b"] for p in pairs], [p["kind"] for p in pairs]
    sample = [rec["text"] for spec in SAMPLES for rec, _ in iter_rows(spec) if rec is not None]
    for i in range(len(sample)):
        for j in range(i + 1, len(sample)):
            a.append(sample[i])
            b.append(sample[j])
            kinds.append("samples")
    ref = (minilm_embed(a) * minilm_embed(b)).sum(1)
    sa, sb = static_embed(a), static_embed(b)
    fast = (sa * sb).sum(1)
    mean = np.concatenate([sa, sb]).mean(axis=0)
    floor_ok = (centred(sa, mean) * centred(sb, mean)).sum(1) >= CENTRED_FLOOR
    truth = ref >= 0.9
    print(f"{len(a)} pairs ({len(pairs)} written + {len(a) - len(pairs)} of the samples); "
          f"{int(truth.sum())} at MiniLM cosine >= 0.9")
    print("| kind | pairs | MiniLM >= 0.9 | MiniLM cosine median | static cosine median |\n|---|---:|---:|---:|---:|")
    for k in dict.fromkeys(kinds):
        m = np.asarray([x == k for x in kinds])
        print(f"| {k} | {int(m.sum())} | {int(truth[m].sum())} | {np.median(ref[m]):.3f} | {np.median(fast[m]):.3f} |")
    print(f"| static threshold | recall | precision | recall with centred >= {CENTRED_FLOOR} | precision with it |\n"
          "|---:|---:|---:|---:|---:|")
    for t in sorted({round(x, 2) for x in np.arange(0.80, 0.99, 0.01)} | {STATIC_THRESHOLD}):
        cells = []
        for pred in (fast >= t, (fast >= t) & floor_ok):
            tp = int((pred & truth).sum())
            cells += [f"{tp / max(int(truth.sum()), 1):.3f}", f"{tp / max(int(pred.sum()), 1):.3f}"]
        mark = " (the kit's)" if t == STATIC_THRESHOLD else ""
        print(f"| {t:.2f}{mark} | " + " | ".join(cells) + " |")
    demo = [rec["text"] for spec in DEMO for rec, _ in iter_rows(spec) if rec is not None]
    d_static, d_ref = static_embed(demo), minilm_embed(demo)
    upper = np.triu_indices(len(demo), 1)
    s_cos, r_cos = (d_static @ d_static.T)[upper], (d_ref @ d_ref.T)[upper]
    c = centred(d_static, d_static.mean(axis=0))
    c_cos = (c @ c.T)[upper]
    flagged = s_cos >= STATIC_THRESHOLD
    print(f"demo corpus: {len(s_cos)} pairs, {int((r_cos >= 0.9).sum())} at MiniLM >= 0.9; static >= {STATIC_THRESHOLD} "
          f"flags {int(flagged.sum())} (MiniLM {', '.join(f'{x:.2f}' for x in r_cos[flagged])}), with the centred "
          f"floor {int((flagged & (c_cos >= CENTRED_FLOOR)).sum())}")


def openai_benchmark(n_prompts: int = 128) -> None:
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
                for conc in (1, 64, 256):
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
    # The paper's raw pool on a served model: docs/full_scale.md assumes ~3,000 generated tokens/s for a
    # 48-sequence batch on 2 GPUs at TP 2, so an 8-GPU vLLM server (4 replicas) ~12,000 tokens/s.
    rows, tokens_per_row, tokens_per_s = 823_703, 2 * 60, 12_000  # difficulty + category, ~60 answer tokens each
    hours = rows * tokens_per_row / tokens_per_s / 3600
    print(f"projected: {rows:,} rows x 2 labels x ~60 tokens at {tokens_per_s:,} tokens/s (8 GPUs, docs/full_scale.md's "
          f"throughput) = {hours:.1f} h with enough requests in flight (concurrency >= 4 x 48)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="", help="comma-separated corpus sizes for the funnel table, e.g. 10000,100000")
    ap.add_argument("--compare", type=int, default=0, help="rows for the semantic stage before/after comparison")
    ap.add_argument("--calibrate", action="store_true", help="the static threshold against MiniLM cosine >= 0.9")
    ap.add_argument("--openai", action="store_true", help="the OpenAI backend at concurrency 1 vs 64")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not (sizes or args.compare or args.calibrate or args.openai):
        ap.error("nothing to run: give --sizes, --compare, --calibrate or --openai")
    if args.calibrate:
        calibrate()
    if args.compare:
        compare_semantic(args.compare)
    if sizes:
        funnel_benchmark(sizes)
    if args.openai:
        openai_benchmark()


if __name__ == "__main__":
    main()

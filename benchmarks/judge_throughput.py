"""LLM-judge throughput over the OpenAI-compatible backend: concurrency 1 vs 64, same server.

    python benchmarks/judge_throughput.py [--delay 0.5] [--requests 256] [--model tiny-qwen3]
    python benchmarks/judge_throughput.py --base-url http://127.0.0.1:8000/v1 --model embedded  # a running server

Starts tests/openai_server.py (a real separate process answering from a real model) with an
artificial latency of --delay seconds per request -- a stand-in for the network and queueing time of
a remote server, so that concurrency matters -- and grades benchmark responses criterion by criterion
with ``judge.grade_responses`` over ``OpenAICompatibleLLM`` (no cache, no machine checks, short
explanations). Prints requests/s at each concurrency, the ratio, and how many judgments were known.
The test server decodes one request at a time, so at high concurrency its model time is the ceiling.
With --fixed-answer the server answers a fixed valid grade instead (the client's engine alone).
With --base-url the same measurement runs against a server already running (e.g. vLLM), no delay added.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from promedical.core.data import load_candidates, load_split
from promedical.models.llm import OpenAICompatibleLLM
from promedical.reward.judge import grade_responses
from promedical.reward.judge_quality import coverage


def start_server(model: str, delay: float, answer: str | None = None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "openai_server.py"), "--port", "0",
                             "--model", model, "--delay", str(delay), *(["--answer", answer] if answer else [])],
                            cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"the test server did not start (exit {proc.wait()})")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


def responses_for(n_requests: int, rubrics: dict) -> list[dict]:
    """Benchmark candidates (each reused under a fresh response id) until they hold n criterion requests."""
    out, cands, total, k = [], load_candidates(), 0, 0
    while total < n_requests:
        cand = cands[k % len(cands)]
        out.append({**cand, "response_id": f"{cand['response_id']}-r{k}"})
        total += len(rubrics[cand["prompt_id"]].criteria)
        k += 1
    return out


def model_seconds(base_url: str) -> float | None:
    """The test server's time spent in its model so far (None for another server)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as resp:
            return json.loads(resp.read()).get("model_seconds")
    except (OSError, ValueError):
        return None


def run(base_url: str, model: str, concurrency: int, responses: list[dict], rubrics: dict) -> dict:
    llm = OpenAICompatibleLLM(base_url, model, concurrency=concurrency, max_retries=2, backoff=0.1, timeout=300)
    m0 = model_seconds(base_url)
    t0 = time.perf_counter()
    judgments = grade_responses(rubrics, responses, llm, retries=0, progress=False, use_checks=False,
                                explanation_chars=0)
    seconds = time.perf_counter() - t0
    cov = coverage(judgments)
    m1 = model_seconds(base_url)
    per_request = round((m1 - m0) / len(judgments), 3) if m0 is not None and m1 is not None else None
    return {"concurrency": concurrency, "requests": len(judgments), "seconds": round(seconds, 2),
            "requests_per_s": round(len(judgments) / seconds, 2), "known": cov["known"], "model_s_per_request": per_request}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-qwen3")
    ap.add_argument("--delay", type=float, default=0.5, help="artificial server latency per request (s)")
    ap.add_argument("--requests", type=int, default=256, help="criterion requests at concurrency 64")
    ap.add_argument("--sequential-requests", type=int, default=32, help="criterion requests at concurrency 1")
    ap.add_argument("--concurrency", type=int, default=64, help="the high concurrency to compare with 1")
    ap.add_argument("--base-url", help="measure a server already running instead of starting the test server")
    ap.add_argument("--fixed-answer", action="store_true",
                    help="the test server answers a fixed valid grade instead of running its model: measures the "
                         "client's request engine alone (latency = --delay)")
    args = ap.parse_args()
    if args.requests < 1 or args.sequential_requests < 1 or args.concurrency < 1 or args.delay < 0:
        ap.error("--requests, --sequential-requests and --concurrency must be >= 1, --delay >= 0")
    rubrics = {r.id: r for r in load_split("bench")}
    proc, base_url = (None, args.base_url) if args.base_url else start_server(
        args.model, args.delay, '{"explanation": "", "criteria_met": true}' if args.fixed_answer else None)
    try:
        run(base_url, args.model, 4, responses_for(4, rubrics), rubrics)  # warm-up (grammar compile)
        one = show(run(base_url, args.model, 1, responses_for(args.sequential_requests, rubrics), rubrics))
        many = show(run(base_url, args.model, args.concurrency, responses_for(args.requests, rubrics), rubrics))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    where = f"server {base_url}" if args.base_url else f"test server, delay {args.delay} s per request" + (
        ", fixed answer" if args.fixed_answer else ", model answers")
    print(f"ratio: {many['requests_per_s'] / one['requests_per_s']:.1f}x ({where})")


def show(r: dict) -> dict:
    print(f"concurrency {r['concurrency']:>3}: {r['requests']} requests in {r['seconds']} s = "
              f"{r['requests_per_s']} requests/s ({r['known']} known"
              + (f"; model {r['model_s_per_request']} s per request)" if r["model_s_per_request"] is not None else ")"),
              flush=True)
    return r


if __name__ == "__main__":
    main()

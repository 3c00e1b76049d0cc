"""Reward-model training throughput: packed criteria vs one sequence per criterion, and Unsloth vs PEFT.

    python benchmarks/rm_training.py [--model embedded] [--criteria 7] [--responses 8] [--repeats 3]
                                     [--lora-layers N] [--threads N] [--steps 6] [--batch-size 2] [--skip-backends]

1. Packed vs unpacked: forward + backward of the rewards of ``--responses`` gold candidates with
   ``--criteria`` criteria each, once as ONE packed sequence per response (``packed_rewards``: prefix,
   then every criterion suffix; on SDPA ``packed_attention`` computes only the attended pairs) and once
   as one (prefix + criterion) sequence per criterion (``reward_full``, the path without packing).
   Prints criteria/s, peak memory and the ratio on a line "packed vs one sequence per criterion:
   N.NNx criteria/s" (wall clock), then the same ratio in process CPU time: on a CPU shared with other
   jobs the wall clock of multi-threaded torch mostly measures waiting for the other jobs (the two
   sides run one after the other, under different load); CPU time measures the work.
2. Unsloth vs PEFT: the same ``CriteriaRewardModel.train`` run (transformers.Trainer) on each backend.

Every measurement runs in its own process (Unsloth patches transformers globally; peak memory is per
process: CUDA peak allocated on GPU, peak RSS above the loaded model on CPU).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

from promedical.reward.trainer import train_reward_model


def _peak_mib(base_rss_mib: float) -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss_mib


def run_packing(mode: str, model: str, n_criteria: int, n_responses: int, repeats: int, lora_layers: int | None,
                threads: int | None = None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)

    from promedical.core.data import load_candidates, load_split
    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel

    rubrics = {r.id: r for r in load_split("bench")}
    cands = [c for c in load_candidates() if c["prompt_id"] in rubrics][:n_responses]
    rm = CriteriaRewardModel.load(RMConfig(model=model, max_length=4096, lora_layers=lora_layers))
    rm.model.train()
    encoded = [rm.encode(rubrics[c["prompt_id"]].messages, c["response"], rubrics[c["prompt_id"]].criteria[:n_criteria])
               for c in cands]
    n = sum(len(s) for _, s, _ in encoded)
    tokens = {"packed": sum(len(p) + sum(map(len, s)) for p, s, _ in encoded),
              "per_criterion": sum(len(p) + len(x) for p, s, _ in encoded for x in s)}[mode]

    def once():
        rm.model.zero_grad()
        for e in encoded:  # one response at a time (a micro-batch of 1: no padding either way)
            if mode == "packed":
                r = rm.packed_rewards([e])[0]
            else:
                r = rm.reward_full([(e[0], s) for s in e[1]], e[2])
            r.sum().backward()

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    once()  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        once()
    seconds, cpu = (time.perf_counter() - t0) / repeats, (time.process_time() - c0) / repeats
    return {"mode": mode, "criteria": n, "responses": len(encoded), "tokens_per_pass": tokens,
            "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "criteria_per_s": round(n / seconds, 2),
            "criteria_per_cpu_s": round(n / cpu, 3), "peak_mib": round(_peak_mib(base), 1),
            "device": "cuda" if torch.cuda.is_available() else f"cpu threads={torch.get_num_threads()}"}


def run_backend(backend: str, model: str, steps: int, batch_size: int) -> dict:
    import torch

    from promedical.core.data import load_candidates, load_split
    from promedical.reward.config import RMConfig
    from promedical.reward.pairs import build_datasets
    from promedical.reward.scorer import CriteriaRewardModel

    dd, _ = build_datasets(load_split("bench"), load_candidates())
    pairs, point = list(dd["pairs"]), list(dd["pointwise"])
    rm = CriteriaRewardModel.load(RMConfig(model=model, backend=backend, max_steps=steps, batch_size=batch_size,
                                           save_every=10_000, max_length=4096, report_to="none"))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stats = train_reward_model(rm, pairs, point, tmp, progress=False)
        seconds = time.perf_counter() - t0
    return {"backend": backend, "seconds": round(seconds, 2), "prompts_per_s": round(steps * batch_size / seconds, 3),
            "final_loss": stats["final_loss"], "peak_mib": round(_peak_mib(base), 1),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--criteria", type=int, default=7)
    ap.add_argument("--responses", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--lora-layers", type=int, default=None, help="adapt only the top n layers (packing comparison)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the packing comparison (default: torch's)")
    ap.add_argument("--skip-backends", action="store_true")
    ap.add_argument("--packing", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.packing:
        print(json.dumps(run_packing(args.packing, args.model, args.criteria, args.responses, args.repeats, args.lora_layers,
                                     args.threads)))
        return
    if args.backend:
        print(json.dumps(run_backend(args.backend, args.model, args.steps, args.batch_size)))
        return
    common = ["--model", args.model, "--criteria", str(args.criteria), "--responses", str(args.responses),
              "--repeats", str(args.repeats)] + (["--lora-layers", str(args.lora_layers)] if args.lora_layers else []) \
        + (["--threads", str(args.threads)] if args.threads else [])
    rows = {m: _child(["--packing", m, *common]) for m in ("per_criterion", "packed")}
    print("| path | criteria | tokens/pass | s/pass | CPU s/pass | criteria/s | peak MiB |\n|---|---|---|---|---|---|---|")
    for r in rows.values():
        print(f"| {r['mode']} | {r['criteria']} | {r['tokens_per_pass']} | {r['seconds']} | {r['cpu_seconds']} | "
              f"{r['criteria_per_s']} | {r['peak_mib']} |")
    p, u = rows["packed"], rows["per_criterion"]
    print(f"packed vs one sequence per criterion ({p['device']}, {args.criteria} criteria/response): "
          f"{p['criteria_per_s'] / u['criteria_per_s']:.2f}x criteria/s, peak memory "
          f"{p['peak_mib'] / max(u['peak_mib'], 1e-9):.2f}x")
    print(f"packed vs one sequence per criterion, process CPU time: {u['cpu_seconds'] / p['cpu_seconds']:.2f}x criteria/CPU-s")
    if args.skip_backends:
        return
    backends = {b: _child(["--backend", b, "--model", args.model, "--steps", str(args.steps), "--batch-size",
                           str(args.batch_size)]) for b in ("peft", "unsloth")}
    for r in backends.values():
        print(r)
    p, u = backends["peft"], backends["unsloth"]
    print(f"unsloth/peft: speed {u['prompts_per_s'] / p['prompts_per_s']:.2f}x, peak memory {u['peak_mib'] / max(p['peak_mib'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()

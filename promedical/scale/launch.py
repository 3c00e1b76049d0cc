"""Launch a pipeline step as its own process(es): the same functions the notebooks call, run by the
CLI (`promedical step NAME`) and, at full scale, under `accelerate launch` (DeepSpeed ZeRO-3 / FSDP
configs in configs/accelerate/) with a `trl vllm-serve` server for GRPO rollouts in server mode.

`launch()` streams the processes' output line by line (into a notebook cell or a terminal) and
returns when they end; `dry_run=True` prints the exact commands instead.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from promedical.scale.profiles import CONFIG_DIR, load_scale
from promedical.steps import STEPS


def run_step(name: str, workspace, params: dict) -> dict:
    """Run a registered step in this process on its config built from ``params``."""
    if name not in STEPS:
        raise ValueError(f"unknown step {name!r}; known: {', '.join(STEPS)}")
    step = STEPS[name]
    return step.run(workspace, step.config.from_dict(params))


def step_params(scale: str, step: str) -> dict:
    """The parameters a scale config gives a step: its `launch_params:` entry, else its notebook's, over
    the scale's top-level `model:` for every step whose config has a ``model`` field."""
    from promedical.steps import STEP_CONFIGS, STEP_NOTEBOOKS

    config = load_scale(scale)
    base = {"model": config["model"]} if "model" in config and "model" in STEP_CONFIGS[step].names() else {}
    if step in config.get("launch_params", {}):
        return {**base, **config["launch_params"][step]}
    notebook = STEP_NOTEBOOKS.get(step)
    for entry in config.get("steps", []):
        if entry.get("notebook") == notebook:
            return {**base, **entry.get("parameters", {})}
    return base


CANDIDATES_PER_PROMPT = 4


SHARDING = {"zero3": "configs/accelerate/deepspeed_zero3.yaml", "fsdp": "configs/accelerate/fsdp.yaml"}


def commands(step: str, workspace: str | Path, params: dict, *, scale: str = "full", num_processes: int | None = None,
             cpu: bool = False, sharding: str | None = None) -> list[tuple[dict, list[str]]]:
    """[(extra environment, argv)] to run ``step``; more than one entry means run them together
    (the vLLM server first, in the background). ``sharding`` ("zero3" | "fsdp") picks the shipped
    accelerate config instead of the scale's (with ``cpu``: in fp32, e.g. to prove ZeRO-3 on CPU)."""
    if sharding is not None and sharding not in SHARDING:
        raise ValueError(f"sharding must be one of {', '.join(SHARDING)}, got {sharding!r}")
    cfg = load_scale(scale).get("launch", {}) if scale else {}
    merged = {**step_params(scale, step), **params} if scale else dict(params)
    worker = ["-m", "promedical", "step", step, "--workspace", str(workspace), "--params", json.dumps(merged)]
    n = process_count(cfg, step, num_processes)
    if not STEPS[step].distributed or n == 1 and not cfg.get("accelerate_config"):
        return [({}, [sys.executable, *worker])]
    out = []
    server = cfg.get("vllm_server")
    env: dict = {}
    if step == "grpo" and server and not cpu:
        out.append(({"CUDA_VISIBLE_DEVICES": str(server["gpus"])},
                    ["trl", "vllm-serve", "--model", str(merged.get("model", "embedded")),
                     "--tensor-parallel-size", str(server.get("tensor_parallel_size", 1)),
                     "--port", str(server.get("port", 8000))]))
        env = {"CUDA_VISIBLE_DEVICES": str(cfg["train_gpus"])} if cfg.get("train_gpus") else {}
    acc = ["accelerate", "launch", "--num_processes", str(n), "--num_machines", "1"]
    if sharding:
        acc += ["--config_file", str(CONFIG_DIR.parent / SHARDING[sharding])]
        if cpu:
            acc += ["--mixed_precision", "no"]
            env["PROMEDICAL_FORCE_CPU"] = "1"
    elif cpu:
        # accelerate's --cpu runs several processes only through mpirun; its torchrun path (--multi_gpu)
        # works on CPU too: the kit picks the CPU and torch.distributed picks gloo.
        acc += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
        env["PROMEDICAL_FORCE_CPU"] = "1"
    elif cfg.get("accelerate_config"):
        acc += ["--config_file", str(CONFIG_DIR.parent / cfg["accelerate_config"])]  # relative to the repo root
    out.append((env, acc + worker))
    return out


def process_count(cfg: dict, step: str, num_processes: int | None) -> int:
    """--num-processes, else the scale's per-step or global count, else 1; anything but an int >= 1 is refused."""
    if num_processes is None:
        num_processes = cfg.get("num_processes_per_step", {}).get(step) or cfg.get("num_processes", 1)
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"number of processes must be an integer >= 1, got {num_processes!r}")
    return num_processes


def plan_for(step: str, scale: str, params: dict | None = None, num_processes: int | None = None):
    """The memory plan of a training step at a scale (None for steps that do not train on GPUs)."""
    from promedical.scale.planner import plan

    if not STEPS[step].distributed:
        return None
    config = load_scale(scale)
    cfg = config.get("launch", {})
    p = {**step_params(scale, step), **(params or {})}
    n = process_count(cfg, step, num_processes)
    sharded = any(k in str(cfg.get("accelerate_config", "")) for k in ("zero3", "fsdp"))
    common = dict(n_gpus=n, sharded=sharded, gpu_gib=cfg.get("gpu_memory_gib", 80))
    if step == "rm-train":
        # packed training: one sequence (prefix + every criterion suffix) per candidate response, all the
        # labelled candidates of a prompt in one micro-batch (the paper samples ~4 per prompt)
        local_prompts = p.get("micro_batch_size") or -(-p.get("batch_size", 4) // n)
        return plan("rm", policy=p.get("model", config["model"]), micro_batch=CANDIDATES_PER_PROMPT * local_prompts,
                    seq_len=p.get("max_length", 1024), gradient_checkpointing=p.get("gradient_checkpointing", False),
                    **common)
    reward = config.get("launch_params", {}).get("rm-train", {}).get("model", config["model"])
    colocate = p.get("vllm_gpu_memory_utilization", 0.3) if p.get("use_vllm") and p.get("vllm_mode", "colocate") == "colocate" else 0
    return plan("grpo", policy=p.get("model", config["model"]), reward=reward, lora=p.get("lora", True),
                micro_batch=p.get("group_size", 8) * p.get("prompts_per_step", 1),
                seq_len=p.get("max_prompt_length", 1024) + p.get("max_completion_length", 256), vllm_colocate=colocate,
                **common)


def render(cmds: list[tuple[dict, list[str]]]) -> str:
    lines = []
    for k, (env, argv) in enumerate(cmds):
        prefix = " ".join(f"{key}={shlex.quote(v)}" for key, v in env.items())
        line = " ".join(filter(None, [prefix, " ".join(shlex.quote(a) for a in argv)]))
        lines.append(line + (" &" if k < len(cmds) - 1 else ""))
    return "\n".join(lines)


def launch(step: str, workspace: str | Path, params: dict | None = None, *, scale: str = "full",
           num_processes: int | None = None, cpu: bool = False, sharding: str | None = None, dry_run: bool = False,
           stream=None) -> int:
    """Run (or, with dry_run, print) the commands for ``step``; output is streamed line by line."""
    from promedical.scale.planner import PlanError

    stream = stream or sys.stdout
    cmds = commands(step, workspace, params or {}, scale=scale, num_processes=num_processes, cpu=cpu, sharding=sharding)
    memory = None if cpu else plan_for(step, scale, params, num_processes)
    if memory is not None:
        print(f"# memory plan ({step}, scale {scale}):\n" + "\n".join("# " + line for line in memory.table().splitlines()),
              file=stream)
        if not memory.fits and not dry_run:
            raise PlanError(f"{step} at scale {scale} does not fit in GPU memory; nothing was started:\n{memory.table()}")
    if dry_run:
        print(render(cmds), file=stream)
        return 0
    background = []
    try:
        for env, argv in cmds[:-1]:  # the vLLM server: started first, stopped when the trainer ends
            background.append(subprocess.Popen(argv, env={**os.environ, **env}))
            time.sleep(5)
        env, argv = cmds[-1]
        if argv[:2] == ["accelerate", "launch"]:  # the venv's accelerate, whether or not it is on PATH
            argv = [sys.executable, "-m", "accelerate.commands.launch", *argv[2:]]
        proc = subprocess.Popen(argv, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            stream.write(line)
            stream.flush()
        return proc.wait()
    finally:
        for p in background:
            p.terminate()

"""Launch a pipeline step as its own process(es): the same functions the notebooks call, run by the
CLI (`promedical step NAME`) and, at full scale, under `accelerate launch` (DeepSpeed ZeRO-3 / FSDP
configs in configs/accelerate/) with a `trl vllm-serve` server for GRPO rollouts in server mode.

The caller builds the step's config once (``Scale.config``) and passes it: the memory plan, the
printed commands and the worker (``promedical step NAME --params <the config>``) all read that object.
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

from promedical.scale.planner import PROMPT_TOKENS, Plan, PlanError, plan
from promedical.scale.profiles import CONFIG_DIR, Scale
from promedical.steps import STEPS

# packed reward-model training puts all the labelled candidates of a prompt in one micro-batch (the
# paper samples ~4 per prompt)
CANDIDATES_PER_PROMPT = 4


SHARDING = {"zero3": "configs/accelerate/deepspeed_zero3.yaml", "fsdp": "configs/accelerate/fsdp.yaml"}


def commands(step: str, workspace: str | Path, config, scale: Scale, *, num_processes: int | None = None,
             cpu: bool = False, sharding: str | None = None) -> list[tuple[dict, list[str]]]:
    """[(extra environment, argv)] to run ``step`` on its built ``config``; more than one entry means run
    them together (the vLLM server first, in the background). ``sharding`` ("zero3" | "fsdp") picks the
    shipped accelerate config instead of the scale's (with ``cpu``: in fp32, e.g. to prove ZeRO-3 on CPU)."""
    if sharding is not None and sharding not in SHARDING:
        raise ValueError(f"sharding must be one of {', '.join(SHARDING)}, got {sharding!r}")
    cfg = scale.launch
    worker = ["-m", "promedical", "step", step, "--workspace", str(workspace), "--params",
              json.dumps(config.to_dict(), allow_nan=False)]
    n = process_count(cfg, step, num_processes)
    if not STEPS[step].distributed or n == 1 and not cfg.get("accelerate_config"):
        return [({}, [sys.executable, *worker])]
    out = []
    server = cfg.get("vllm_server")
    env: dict = {}
    if step == "grpo" and server and not cpu:
        out.append(({"CUDA_VISIBLE_DEVICES": str(server["gpus"])},
                    ["trl", "vllm-serve", "--model", config.model,
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


def plan_for(step: str, config, scale: Scale, num_processes: int | None = None, *,
             reward_model: str | None = None) -> Plan | None:
    """The memory plan of a training step on its built ``config`` at ``scale`` (None for steps that do not
    train on GPUs). Every number comes from the config the step will run; GRPO's frozen reward model is
    ``reward_model`` (default: the backbone of the scale's ``rm-train`` config)."""
    if not STEPS[step].distributed:
        return None
    cfg = scale.launch
    n = process_count(cfg, step, num_processes)
    sharded = any(k in str(cfg.get("accelerate_config", "")) for k in ("zero3", "fsdp"))
    common = dict(n_gpus=n, sharded=sharded, gpu_gib=cfg.get("gpu_memory_gib", 80), lora_r=config.lora_r)
    if step == "rm-train":
        local_prompts = config.micro_batch_size or -(-config.batch_size // n)
        return plan("rm", policy=config.model, micro_batch=CANDIDATES_PER_PROMPT * local_prompts,
                    seq_len=config.max_length, gradient_checkpointing=config.gradient_checkpointing, **common)
    reward_model = reward_model or scale.config("rm-train").model
    colocate = config.vllm_gpu_memory_utilization if config.use_vllm and config.vllm_mode == "colocate" else 0
    return plan("grpo", policy=config.model, reward=reward_model, lora=config.lora, kl=config.beta > 0,
                micro_batch=config.group_size * config.prompts_per_step,
                seq_len=PROMPT_TOKENS + config.max_completion_length, vllm_colocate=colocate, **common)


def render(cmds: list[tuple[dict, list[str]]]) -> str:
    lines = []
    for k, (env, argv) in enumerate(cmds):
        prefix = " ".join(f"{key}={shlex.quote(v)}" for key, v in env.items())
        line = " ".join(filter(None, [prefix, " ".join(shlex.quote(a) for a in argv)]))
        lines.append(line + (" &" if k < len(cmds) - 1 else ""))
    return "\n".join(lines)


def launch(step: str, workspace: str | Path, config, scale: Scale, *, num_processes: int | None = None,
           cpu: bool = False, sharding: str | None = None, dry_run: bool = False, stream=None) -> int:
    """Run (or, with dry_run, print) the commands for ``step`` on its built ``config``; output is streamed
    line by line. A training step that does not fit in GPU memory is refused (PlanError) before anything starts."""
    stream = stream or sys.stdout
    cmds = commands(step, workspace, config, scale, num_processes=num_processes, cpu=cpu, sharding=sharding)
    memory = None if cpu else plan_for(step, config, scale, num_processes)
    if memory is not None:
        print(f"# memory plan ({step}, scale {scale.name}):\n" + "\n".join("# " + line for line in memory.table().splitlines()),
              file=stream)
        if not memory.fits and not dry_run:
            raise PlanError(f"{step} at scale {scale.name} does not fit in GPU memory; nothing was started:\n{memory.table()}")
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

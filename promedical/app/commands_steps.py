"""``promedical demo``, ``notebook``, ``step``, ``params``, ``plan`` and ``launch``: running the pipeline's
steps. Each builds a step's typed config once, from the registry (``promedical.steps.STEPS``), and hands
that object to the step, the planner or the launcher."""
from __future__ import annotations

import json
import math

from promedical.app.arguments import (
    UsageError,
    add_param_args,
    add_workspace_arg,
    checked_workspace,
    error,
    parse_params,
    positive_int,
    scale_arg,
)
from promedical.core.ids import escape
from promedical.steps import STEPS

SHOWN_RESULT_KEYS = ("steps", "seconds", "final_loss", "processes", "distributed", "seconds_per_step", "split_seconds")


def cmd_demo(args) -> int:
    from promedical.app.demo import notebook_plan, run_demo

    scale = args.scale.with_model(args.model)
    notebooks = _checked(notebook_plan, scale)  # every step's parameters checked before anything runs
    ws = checked_workspace(args.workspace)
    summary = run_demo(ws, scale=scale, notebooks=notebooks)
    print(f"summary: {summary}")
    if ws.bench_report.is_file():
        print(f"report: {escape(ws.bench_report)}")
    return 0


def cmd_notebook(args) -> int:
    from promedical.app.notebooks import check_notebook_params, notebook_path, run_notebook

    params = parse_params(args.param)
    if "workspace" in params:
        raise UsageError("-p workspace: give the workspace as --workspace")
    try:
        path = notebook_path(args.name)
        check_notebook_params(path, params)
    except ValueError as exc:
        raise UsageError(exc) from None
    ws = checked_workspace(args.workspace)
    print(f"executed: {escape(run_notebook(path.stem, ws, params))}")
    return 0


def _checked(build, *args):
    """``build(*args)`` (a step's config, the demo's notebook plan); a value a config refuses is a usage
    error (one line)."""
    try:
        return build(*args)
    except ValueError as exc:
        raise UsageError(exc) from None


def cmd_step(args) -> int:
    step = STEPS[args.name]
    config = _checked(step.config.from_dict, parse_params(args.param, args.params))
    result = step.run(checked_workspace(args.workspace), config)
    shown = {k: v for k, v in result.items() if k in SHOWN_RESULT_KEYS}
    shown = {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in shown.items()}  # valid JSON
    print(json.dumps(shown, default=str, allow_nan=False))
    return 0


def cmd_params(args) -> int:
    from promedical.steps import markdown, text_table

    if args.markdown:
        print(markdown())
        return 0
    for name in [args.step] if args.step else STEPS:
        print(f"# {name}: {STEPS[name].config.__name__}\n{text_table(name)}\n")
    return 0


def cmd_plan(args) -> int:
    from promedical.scale.launch import plan_for

    configs = {name: _checked(args.scale.config, name) for name in ("rm-train", "grpo")}
    fits = True
    for name, config in configs.items():
        memory = plan_for(name, config, args.scale, args.num_processes, reward_model=configs["rm-train"].model)
        print(f"{name} (scale {args.scale.name}):\n{memory.table()}")
        fits &= memory.fits
    return 0 if fits else 1


def cmd_launch(args) -> int:
    from promedical.scale.launch import launch
    from promedical.scale.planner import PlanError

    config = _checked(args.scale.config, args.name, parse_params(args.param, args.params))
    ws = checked_workspace(args.workspace)
    try:
        return launch(args.name, ws, config, args.scale, num_processes=args.num_processes, cpu=args.cpu,
                      sharding=args.sharding, dry_run=args.dry_run)
    except PlanError as exc:  # the plan table is already on stdout
        return error(str(exc).splitlines()[0])


def add_commands(sub) -> None:
    """Register the step commands on the top-level subparsers."""
    p = sub.add_parser("demo", help="run the demo pipeline (the scale's notebooks, in order) on the embedded model")
    add_workspace_arg(p)
    p.add_argument("--model", default=None, help="override the scale config's model")
    p.add_argument("--scale", default="demo", type=scale_arg, help="configs/<scale>.yaml (its steps:)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("notebook", help="execute a numbered notebook with papermill (batch mode)")
    p.add_argument("name", help="e.g. 01 or 02_rubric_refinement")
    add_workspace_arg(p)
    add_param_args(p, json_object=False)
    p.set_defaults(func=cmd_notebook)

    p = sub.add_parser("step", help="run one pipeline step in this process (what `launch` runs)")
    p.add_argument("name", choices=list(STEPS))
    add_workspace_arg(p)
    add_param_args(p)
    p.set_defaults(func=cmd_step)

    p = sub.add_parser("launch", help="run a step at scale: accelerate (+ vLLM server for GRPO); --dry-run prints it")
    p.add_argument("name", choices=list(STEPS))
    add_workspace_arg(p)
    p.add_argument("--scale", default="full", type=scale_arg, help="configs/<scale>.yaml (its launch: and steps: sections)")
    p.add_argument("--num-processes", type=positive_int, default=None)
    p.add_argument("--cpu", action="store_true", help="run the processes on CPU (gloo), e.g. to test on a laptop")
    p.add_argument("--sharding", choices=["zero3", "fsdp"], default=None,
                   help="use the shipped DeepSpeed ZeRO-3 or FSDP accelerate config (with --cpu: fp32 on CPU)")
    p.add_argument("--dry-run", action="store_true", help="print the exact commands and exit")
    add_param_args(p)
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("params", help="every parameter of a step (or of all steps): default and help")
    p.add_argument("step", nargs="?", choices=list(STEPS), help="a step (default: all)")
    p.add_argument("--markdown", action="store_true", help="print docs/parameters.md")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("plan", help="GPU memory plan of the RM and GRPO runs of a scale (exit 1 if one cannot fit)")
    p.add_argument("--scale", default="full", type=scale_arg)
    p.add_argument("--num-processes", type=positive_int, default=None)
    p.set_defaults(func=cmd_plan)

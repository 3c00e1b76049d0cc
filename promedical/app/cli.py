"""The ``promedical`` command line. Exit codes: 0 ok, 1 invalid input (one FILE:LINE line each), 2 usage."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from promedical.app.arguments import UsageError, parse_params
from promedical.core import healthbench
from promedical.core.files import OutputError, dumps_line, output_target, write_jsonl
from promedical.core.ids import escape, id_problem, quote
from promedical.core.jsonl import MAX_LINE_BYTES, iter_jsonl
from promedical.core.rubric import RubricError
from promedical.core.rubric_files import file_problems, is_healthbench_record, read_rubrics
from promedical.core.scoring import RewardConfig, grpo_reward, tier_scores


def _fail(problems) -> int:
    for p in problems:
        print(escape(p), file=sys.stderr)  # one line each, whatever the data held
    return 1


def _error(message, code: int = 1) -> int:
    print(escape(message), file=sys.stderr)
    return code


def _check_workspace(workspace: str) -> None:
    """A workspace is a folder or a path where one can be made; raise UsageError otherwise."""
    path = Path(workspace)
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise UsageError(f"--workspace {quote(workspace)}: {quote(str(path))} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--workspace {quote(workspace)}: {quote(str(path))} is not writable")


def _check_output(path: str) -> str | None:
    """A one-line reason why path cannot be written, or None."""
    try:
        output_target(path)
    except OutputError as exc:
        return str(exc)
    return None


def _read_grades(path: str, check_line) -> tuple[list[tuple[int, dict]], list[str]]:
    """Parse a grades JSONL; check_line(obj) returns a list of (field, message)."""
    good, problems = [], []
    try:
        records = list(iter_jsonl(path))
    except OSError as exc:
        return [], [f"{path}:0: <file>: cannot read: {exc.strerror or exc}"]
    if not records:
        problems.append(f"{path}:0: <file>: file is empty (no records)")
    for line, obj, err in records:
        found = [("<line>", err)] if err else check_line(obj)
        problems += [f"{path}:{line}: {field}: {msg}" for field, msg in found]
        if not found:
            good.append((line, obj))
    return good, problems


GRADE_KEYS = ("prompt_id", "response_id", "criteria_met")


def _kit_grade_problems(obj) -> list[tuple[str, str]]:
    if not isinstance(obj, dict):
        return [("<record>", "must be a JSON object")]
    out = [(k, msg) for k in ("prompt_id", "response_id") if (msg := id_problem(obj.get(k)))]
    out += [(k, f"unknown field (expected one of: {', '.join(GRADE_KEYS)})") for k in obj if k not in GRADE_KEYS]
    met = obj.get("criteria_met")
    if not isinstance(met, dict) or not all(isinstance(v, bool) for v in met.values()):
        out.append(("criteria_met", "must be an object {criterion_id: true|false}"))
    return out


def _hb_grade_problems(obj) -> list[tuple[str, str]]:
    if not isinstance(obj, dict):
        return [("<record>", "must be a JSON object")]
    out = [("prompt_id", msg)] if (msg := id_problem(obj.get("prompt_id"))) else []
    out += [(k, "unknown field (expected prompt_id, criteria_met)") for k in obj if k not in ("prompt_id", "criteria_met")]
    met = obj.get("criteria_met")
    if not isinstance(met, list) or not all(isinstance(v, bool) for v in met):
        out.append(("criteria_met", "must be a list of true|false in rubric order"))
    return out


def cmd_validate(args) -> int:
    problems = [p for f in args.files for p in file_problems(f)]
    if problems:
        return _fail(problems)
    print(f"ok: {len(args.files)} file(s) valid")
    return 0


def cmd_score(args) -> int:
    try:
        config = RewardConfig(alpha=args.alpha, beta=args.beta, lam=args.lam)
    except ValueError as exc:
        return _error(f"promedical score: error: {exc}", 2)
    try:
        rubrics = {r.id: r for r in read_rubrics(args.rubrics)}
    except RubricError as exc:
        return _fail(exc.problems)
    grades, problems = _read_grades(args.grades, _kit_grade_problems)
    rows, first_line = [], {}
    for line, g in grades:
        key = (g["prompt_id"], g["response_id"])
        if key in first_line:  # two grade lines for one response would both be scored
            problems.append(f"{args.grades}:{line}: response_id: duplicate grades for response {quote(key[1])} of "
                            f"{quote(key[0])} (first on line {first_line[key]})")
            continue
        first_line[key] = line
        rubric = rubrics.get(g["prompt_id"])
        if rubric is None:
            problems.append(f"{args.grades}:{line}: prompt_id: no rubric {quote(g['prompt_id'])} in {args.rubrics}")
            continue
        try:
            s = tier_scores(rubric, g["criteria_met"])
        except KeyError as exc:
            problems.append(f"{args.grades}:{line}: criteria_met: {exc.args[0]}")
            continue
        rows.append({"prompt_id": g["prompt_id"], "response_id": g["response_id"], "s1": s.s1,
                     "s2": s.s2, "s3": s.s3, "reward": grpo_reward(s, config)})
        if not math.isfinite(rows[-1]["reward"]):  # cannot happen with a valid config: kept as a guard
            problems.append(f"{args.grades}:{line}: criteria_met: the reward is not finite")
    if problems:
        return _fail(problems)
    for row in rows:
        print(json.dumps(row, allow_nan=False))
    return 0


def _read_healthbench(path: str) -> list[dict] | int:
    """The records of a valid HealthBench JSONL, or the exit code after printing its problems."""
    problems = file_problems(path)
    if problems:
        return _fail(problems)
    records = [obj for _, obj, _ in iter_jsonl(path)]
    if not is_healthbench_record(records[0]):
        print(escape(f"{path}:1: <file>: not HealthBench data (needs prompt and rubrics)"), file=sys.stderr)
        return 1
    return records


def cmd_hb_score(args) -> int:
    records = _read_healthbench(args.data)
    if isinstance(records, int):
        return records
    by_id = {r["prompt_id"]: r for r in records}
    grades, errors = _read_grades(args.grades, _hb_grade_problems)
    met, first_line = {}, {}
    for line, g in grades:
        pid = g["prompt_id"]
        rec = by_id.get(pid)
        if pid in first_line:  # "the last one wins" would silently change the score
            errors.append(f"{args.grades}:{line}: prompt_id: duplicate grades for {quote(pid)} (first on line {first_line[pid]})")
            continue
        first_line[pid] = line
        if rec is None:
            errors.append(f"{args.grades}:{line}: prompt_id: no example {quote(pid)} in {args.data}")
        elif len(g["criteria_met"]) != len(rec["rubrics"]):
            errors.append(f"{args.grades}:{line}: criteria_met: {len(g['criteria_met'])} grades for {len(rec['rubrics'])} criteria")
        else:
            met[pid] = g["criteria_met"]
    missing = [pid for pid in by_id if pid not in first_line]
    errors += [f"{args.grades}:0: prompt_id: no grades for {quote(pid)}" for pid in missing[:20]]
    if errors:
        return _fail(errors)
    print(json.dumps(healthbench.score(records, met), allow_nan=False))
    return 0


def _checked_lines(records: list[dict], check, source: str, lines: list[int]) -> tuple[list[dict], list[str]]:
    """Validate converted records as the reader will (fields and line size) before anything is written."""
    problems = []
    for line, rec in zip(lines, records):
        problems += [f"{source}:{line}: {p}: {m} (after conversion)" for p, m in check(rec)]
        size = len(dumps_line(rec).encode("utf-8"))
        if size > MAX_LINE_BYTES:
            problems.append(f"{source}:{line}: <record>: converted line is {size} bytes, over the {MAX_LINE_BYTES}-byte limit")
    return records, problems


def cmd_hb_import(args) -> int:
    if (reason := _check_output(args.output)):
        return _error(reason)
    records = _read_healthbench(args.input)
    if isinstance(records, int):
        return records
    from promedical.core.rubric import rubric_problems

    lines = [line for line, _, _ in iter_jsonl(args.input)]
    converted, problems = [], []
    for line, rec in zip(lines, records):
        try:
            converted.append(healthbench.to_rubric(rec).to_dict())
        except ValueError as exc:
            problems.append(f"{args.input}:{line}: {exc}")
    if not problems:
        converted, problems = _checked_lines(converted, rubric_problems, args.input, lines)
    if problems:
        return _fail(problems)
    write_jsonl(args.output, converted)
    print(f"wrote {len(converted)} rubrics to {escape(args.output)}")
    return 0


def cmd_hb_export(args) -> int:
    if (reason := _check_output(args.output)):
        return _error(reason)
    try:
        rubrics = read_rubrics(args.input)
    except RubricError as exc:
        return _fail(exc.problems)
    lines = [line for line, _, _ in iter_jsonl(args.input)]
    rows, problems = _checked_lines([healthbench.from_rubric(r) for r in rubrics], healthbench.record_problems,
                                    args.input, lines)
    if problems:
        return _fail(problems)
    write_jsonl(args.output, rows)
    print(f"wrote {len(rows)} HealthBench examples to {escape(args.output)}")
    return 0


def cmd_demo(args) -> int:
    from promedical.app.demo import run_demo
    from promedical.scale.profiles import load_scale

    load_scale(args.scale)  # an unknown or malformed scale is an error before anything runs
    _check_workspace(args.workspace)
    summary = run_demo(Path(args.workspace), model=args.model, scale=args.scale)
    print(f"summary: {summary}")
    report = Path(args.workspace) / "benchmark" / "report.html"
    if report.is_file():
        print(f"report: {escape(report)}")
    return 0


def cmd_notebook(args) -> int:
    from promedical.app.notebooks import check_notebook_params, notebook_path, run_notebook

    params = parse_params(args.param)
    if "workspace" in params:
        raise UsageError("-p workspace: give the workspace as --workspace")
    _check_workspace(args.workspace)
    try:
        path = notebook_path(args.name)
        check_notebook_params(path, params)
    except ValueError as exc:
        raise UsageError(exc) from None
    print(f"executed: {escape(run_notebook(path.stem, Path(args.workspace), params))}")
    return 0


def _checked_params(args) -> dict:
    """The -p / --params of `step` and `launch`, checked against the step's parameters, and the workspace."""
    from promedical.steps import step_config

    params = parse_params(args.param, args.params)
    try:
        step_config(args.name, params)
    except ValueError as exc:
        raise UsageError(exc) from None
    _check_workspace(args.workspace)
    return params


def cmd_step(args) -> int:
    from promedical.scale.launch import run_step

    params = _checked_params(args)
    result = run_step(args.name, args.workspace, params)
    shown = {k: v for k, v in result.items() if k in ("steps", "seconds", "final_loss", "processes", "distributed", "seconds_per_step",
                                                     "split_seconds")}
    shown = {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in shown.items()}  # valid JSON
    print(json.dumps(shown, default=str, allow_nan=False))
    return 0


def cmd_params(args) -> int:
    from promedical.steps import STEP_CONFIGS, markdown, text_table

    if args.markdown:
        print(markdown())
        return 0
    for step in [args.step] if args.step else STEP_CONFIGS:
        print(f"# {step}: {STEP_CONFIGS[step].__name__}\n{text_table(step)}\n")
    return 0


def cmd_plan(args) -> int:
    from promedical.scale.launch import plan_for, step_params
    from promedical.steps import step_config

    for step in ("rm-train", "grpo"):
        step_config(step, step_params(args.scale, step))
    fits = True
    for step in ("rm-train", "grpo"):
        memory = plan_for(step, args.scale, num_processes=args.num_processes)
        print(f"{step} (scale {args.scale}):\n{memory.table()}")
        fits &= memory.fits
    return 0 if fits else 1


def cmd_launch(args) -> int:
    from promedical.scale.launch import launch, step_params
    from promedical.scale.planner import PlanError
    from promedical.steps import step_config

    params = _checked_params(args)
    step_config(args.name, {**step_params(args.scale, args.name), **params})  # the scale's own values
    try:
        return launch(args.name, args.workspace, params, scale=args.scale, num_processes=args.num_processes,
                      cpu=args.cpu, sharding=args.sharding, dry_run=args.dry_run)
    except PlanError as exc:  # the plan table is already on stdout
        return _error(str(exc).splitlines()[0])


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2): `promedical score: error: ... (see --help)`."""

    def error(self, message):
        self.exit(2, escape(f"{self.prog}: error: {message} (see --help)") + "\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {quote(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {quote(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {quote(text)}")
    return value


def scale_name(text: str) -> str:
    from promedical.scale.profiles import load_scale

    try:
        load_scale(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_param_args(p: argparse.ArgumentParser, json_object: bool = True) -> None:
    if json_object:
        p.add_argument("--params", help="a JSON object of parameters")
    p.add_argument("-p", "--param", action="append", default=[], help="KEY=VALUE (VALUE parsed as JSON when it can be)")


# -- review: the team review app (issue 17) ------------------------------------------------------------
def cmd_review(args) -> int:
    from promedical.app.review_server import check_workspace, serve

    try:
        check_workspace(args.workspace, args.reviewer, args.round)
        if args.port is not None and not 1 <= args.port <= 65535:
            raise ValueError(f"--port: {args.port} is not a TCP port (1-65535)")
    except ValueError as exc:
        print(f"promedical review: {exc}", file=sys.stderr)
        return 2
    return serve(args.workspace, args.reviewer, args.round, port=args.port, open_browser=not args.no_browser)


def add_review_parser(sub) -> None:
    p = sub.add_parser("review", help="open the team review app (Voila, 127.0.0.1, token) for one reviewer")
    p.add_argument("--workspace", required=True)
    p.add_argument("--reviewer", required=True, help="your name, as the round's assignments spell it")
    p.add_argument("--round", type=int, default=None, help="round number (default: the latest)")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.set_defaults(func=cmd_review)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="promedical", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate kit rubric or HealthBench JSONL files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("score", help="S1/S2/S3 and GRPO reward per graded response")
    p.add_argument("rubrics")
    p.add_argument("grades")
    defaults = RewardConfig()
    p.add_argument("--alpha", type=finite_float, default=defaults.alpha)
    p.add_argument("--beta", type=finite_float, default=defaults.beta)
    p.add_argument("--lam", type=finite_float, default=defaults.lam)
    p.set_defaults(func=cmd_score)

    hb = sub.add_parser("healthbench", help="HealthBench-format data").add_subparsers(dest="hb", required=True)
    p = hb.add_parser("score", help="HealthBench score of graded examples")
    p.add_argument("data")
    p.add_argument("grades")
    p.set_defaults(func=cmd_hb_score)
    p = hb.add_parser("import", help="HealthBench JSONL -> kit rubric JSONL")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_hb_import)
    p = hb.add_parser("export", help="kit rubric JSONL -> HealthBench JSONL")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_hb_export)

    p = sub.add_parser("demo", help="run the demo pipeline on the embedded model")
    p.add_argument("--workspace", default="runs/demo")
    p.add_argument("--model", default=None, help="override the scale config's model")
    p.add_argument("--scale", default="demo", type=scale_name, help="configs/<scale>.yaml")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("notebook", help="execute a numbered notebook with papermill (batch mode)")
    p.add_argument("name", help="e.g. 01 or 02_rubric_refinement")
    p.add_argument("--workspace", default="runs/demo")
    add_param_args(p, json_object=False)
    p.set_defaults(func=cmd_notebook)

    from promedical.steps import STEPS

    p = sub.add_parser("step", help="run one pipeline step in this process (what `launch` runs)")
    p.add_argument("name", choices=list(STEPS))
    p.add_argument("--workspace", default="runs/demo")
    add_param_args(p)
    p.set_defaults(func=cmd_step)

    p = sub.add_parser("launch", help="run a step at scale: accelerate (+ vLLM server for GRPO); --dry-run prints it")
    p.add_argument("name", choices=list(STEPS))
    p.add_argument("--workspace", default="runs/full")
    p.add_argument("--scale", default="full", type=scale_name, help="configs/<scale>.yaml (its launch: and steps: sections)")
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
    p.add_argument("--scale", default="full", type=scale_name)
    p.add_argument("--num-processes", type=positive_int, default=None)
    p.set_defaults(func=cmd_plan)
    add_review_parser(sub)

    # --- step 00: `ingest` and `curate` (promedical/corpus/cli.py) ---
    from promedical.app.corpus_cli import add_corpus_commands

    add_corpus_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command. Bad input of any kind ends in one line on stderr and exit 1 (2 for usage), never
    a traceback; PROMEDICAL_TRACEBACK=1 shows the traceback of an unexpected error for debugging."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"promedical {args.command}" + (f" {args.hb}" if getattr(args, "hb", None) else "")
    try:
        return args.func(args)
    except UsageError as exc:
        return _error(f"{prog}: error: {exc}", 2)
    except KeyboardInterrupt:
        return _error(f"{prog}: interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: the message, not the stack
        if os.environ.get("PROMEDICAL_TRACEBACK"):
            raise
        text = str(exc).strip().splitlines()
        detail = f"{text[0]}" if text else type(exc).__name__
        if isinstance(exc, (KeyError, TypeError, AttributeError, IndexError)):
            detail = f"{type(exc).__name__}: {detail}"
        return _error(f"{prog}: error: {detail}", 1)


if __name__ == "__main__":
    sys.exit(main())

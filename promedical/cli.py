"""The ``promedical`` command line. Exit codes: 0 ok, 1 invalid input (one FILE:LINE line each), 2 usage."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import healthbench
from .files import write_jsonl
from .rubric import RubricError, file_problems, is_healthbench_record, iter_jsonl, read_rubrics
from .scoring import RewardConfig, grpo_reward, tier_scores


def _fail(problems) -> int:
    for p in problems:
        print(p, file=sys.stderr)
    return 1


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


def _kit_grade_problems(obj) -> list[tuple[str, str]]:
    if not isinstance(obj, dict):
        return [("<record>", "must be a JSON object")]
    out = [(k, "missing or not a string") for k in ("prompt_id", "response_id") if not isinstance(obj.get(k), str)]
    met = obj.get("criteria_met")
    if not isinstance(met, dict) or not all(isinstance(v, bool) for v in met.values()):
        out.append(("criteria_met", "must be an object {criterion_id: true|false}"))
    return out


def _hb_grade_problems(obj) -> list[tuple[str, str]]:
    if not isinstance(obj, dict):
        return [("<record>", "must be a JSON object")]
    out = [] if isinstance(obj.get("prompt_id"), str) else [("prompt_id", "missing or not a string")]
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
        rubrics = {r.id: r for r in read_rubrics(args.rubrics)}
    except (ValueError, RubricError) as exc:
        print(exc, file=sys.stderr)
        return 1 if isinstance(exc, RubricError) else 2
    grades, problems = _read_grades(args.grades, _kit_grade_problems)
    rows = []
    for line, g in grades:
        rubric = rubrics.get(g["prompt_id"])
        if rubric is None:
            problems.append(f"{args.grades}:{line}: prompt_id: no rubric {g['prompt_id']!r} in {args.rubrics}")
            continue
        try:
            s = tier_scores(rubric, g["criteria_met"])
        except KeyError as exc:
            problems.append(f"{args.grades}:{line}: criteria_met: {exc.args[0]}")
            continue
        rows.append({"prompt_id": g["prompt_id"], "response_id": g["response_id"], "s1": s.s1,
                     "s2": s.s2, "s3": s.s3, "reward": grpo_reward(s, config)})
    if problems:
        return _fail(problems)
    for row in rows:
        print(json.dumps(row))
    return 0


def _read_healthbench(path: str) -> list[dict] | int:
    """The records of a valid HealthBench JSONL, or the exit code after printing its problems."""
    problems = file_problems(path)
    if problems:
        return _fail(problems)
    records = [obj for _, obj, _ in iter_jsonl(path)]
    if not is_healthbench_record(records[0]):
        print(f"{path}:1: <file>: not HealthBench data (needs prompt and rubrics)", file=sys.stderr)
        return 1
    return records


def cmd_hb_score(args) -> int:
    records = _read_healthbench(args.data)
    if isinstance(records, int):
        return records
    by_id = {r["prompt_id"]: r for r in records}
    grades, errors = _read_grades(args.grades, _hb_grade_problems)
    met = {}
    for line, g in grades:
        rec = by_id.get(g["prompt_id"])
        if rec is None:
            errors.append(f"{args.grades}:{line}: prompt_id: no example {g['prompt_id']!r} in {args.data}")
        elif len(g["criteria_met"]) != len(rec["rubrics"]):
            errors.append(f"{args.grades}:{line}: criteria_met: {len(g['criteria_met'])} grades for {len(rec['rubrics'])} criteria")
        else:
            met[g["prompt_id"]] = g["criteria_met"]
    missing = [pid for pid in by_id if pid not in met]
    errors += [f"{args.grades}:0: prompt_id: no grades for {pid!r}" for pid in missing[:20]]
    if errors:
        return _fail(errors)
    print(json.dumps(healthbench.score(records, met)))
    return 0


def cmd_hb_import(args) -> int:
    records = _read_healthbench(args.input)
    if isinstance(records, int):
        return records
    write_jsonl(args.output, [healthbench.to_rubric(r).to_dict() for r in records])
    print(f"wrote {len(records)} rubrics to {args.output}")
    return 0


def cmd_hb_export(args) -> int:
    try:
        rubrics = read_rubrics(args.input)
    except RubricError as exc:
        print(exc, file=sys.stderr)
        return 1
    write_jsonl(args.output, [healthbench.from_rubric(r) for r in rubrics])
    print(f"wrote {len(rubrics)} HealthBench examples to {args.output}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    summary = run_demo(Path(args.workspace), model=args.model, scale=args.scale)
    print(f"summary: {summary}")
    report = Path(args.workspace) / "benchmark" / "report.html"
    if report.is_file():
        print(f"report: {report}")
    return 0


def cmd_notebook(args) -> int:
    from .notebooks import run_notebook

    try:
        params = parse_params(args.param)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"executed: {run_notebook(args.name, Path(args.workspace), params)}")
    return 0


def parse_params(items: list[str], params_json: str | None = None) -> dict:
    """-p KEY=VALUE pairs (VALUE parsed as JSON when it can be) over an optional JSON object."""
    params = json.loads(params_json) if params_json else {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"-p expects KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def cmd_step(args) -> int:
    from .launch import run_step

    result = run_step(args.name, args.workspace, parse_params(args.param, args.params))
    print(json.dumps({k: v for k, v in result.items() if k in ("steps", "seconds", "final_loss", "processes",
                                                                "seconds_per_step", "split_seconds")}, default=str))
    return 0


def cmd_plan(args) -> int:
    from .launch import plan_for

    fits = True
    for step in ("rm-train", "grpo"):
        memory = plan_for(step, args.scale, num_processes=args.num_processes)
        print(f"{step} (scale {args.scale}):\n{memory.table()}")
        fits &= memory.fits
    return 0 if fits else 1


def cmd_launch(args) -> int:
    from .launch import launch
    from .planner import PlanError

    try:
        params = parse_params(args.param, args.params)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
            return launch(args.name, args.workspace, params, scale=args.scale, num_processes=args.num_processes,
                      cpu=args.cpu, dry_run=args.dry_run)
    except PlanError as exc:
        print(exc, file=sys.stderr)
        return 1


def add_param_args(p: argparse.ArgumentParser, json_object: bool = True) -> None:
    if json_object:
        p.add_argument("--params", help="a JSON object of parameters")
    p.add_argument("-p", "--param", action="append", default=[], help="KEY=VALUE (VALUE parsed as JSON when it can be)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promedical", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate kit rubric or HealthBench JSONL files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("score", help="S1/S2/S3 and GRPO reward per graded response")
    p.add_argument("rubrics")
    p.add_argument("grades")
    defaults = RewardConfig()
    p.add_argument("--alpha", type=float, default=defaults.alpha)
    p.add_argument("--beta", type=float, default=defaults.beta)
    p.add_argument("--lam", type=float, default=defaults.lam)
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
    p.add_argument("--scale", default="demo", help="configs/<scale>.yaml")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("notebook", help="execute a numbered notebook with papermill (batch mode)")
    p.add_argument("name", help="e.g. 01 or 02_rubric_refinement")
    p.add_argument("--workspace", default="runs/demo")
    add_param_args(p, json_object=False)
    p.set_defaults(func=cmd_notebook)

    from .launch import STEPS

    p = sub.add_parser("step", help="run one pipeline step in this process (what `launch` runs)")
    p.add_argument("name", choices=list(STEPS))
    p.add_argument("--workspace", default="runs/demo")
    add_param_args(p)
    p.set_defaults(func=cmd_step)

    p = sub.add_parser("launch", help="run a step at scale: accelerate (+ vLLM server for GRPO); --dry-run prints it")
    p.add_argument("name", choices=list(STEPS))
    p.add_argument("--workspace", default="runs/full")
    p.add_argument("--scale", default="full", help="configs/<scale>.yaml (its launch: and steps: sections)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--cpu", action="store_true", help="run the processes on CPU (gloo), e.g. to test on a laptop")
    p.add_argument("--dry-run", action="store_true", help="print the exact commands and exit")
    add_param_args(p)
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("plan", help="GPU memory plan of the RM and GRPO runs of a scale (exit 1 if one cannot fit)")
    p.add_argument("--scale", default="full")
    p.add_argument("--num-processes", type=int, default=None)
    p.set_defaults(func=cmd_plan)

    # --- step 00: `ingest` and `curate` (promedical/corpus/cli.py) ---
    from .corpus.cli import add_corpus_commands

    add_corpus_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

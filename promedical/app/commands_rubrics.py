"""``promedical validate``, ``score`` and ``healthbench score|import|export``: the rubric and grade files.

Exit codes as the rest of the CLI: 0 ok, 1 invalid input (one ``FILE:LINE: field: message`` line each),
2 usage."""
from __future__ import annotations

import json
import math

from promedical.app.arguments import error, fail, finite_float
from promedical.core import healthbench
from promedical.core.files import OutputError, dumps_line, output_target, write_jsonl
from promedical.core.ids import escape, id_problem, quote
from promedical.core.jsonl import MAX_LINE_BYTES, iter_jsonl
from promedical.core.rubric import RubricError
from promedical.core.rubric_files import file_problems, is_healthbench_record, read_rubrics
from promedical.core.scoring import RewardConfig, grpo_reward, tier_scores


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
        return fail(problems)
    print(f"ok: {len(args.files)} file(s) valid")
    return 0


def cmd_score(args) -> int:
    try:
        config = RewardConfig(alpha=args.alpha, headroom=args.headroom, lam=args.lam)
    except ValueError as exc:
        return error(f"promedical score: error: {exc}", 2)
    try:
        rubrics = {r.id: r for r in read_rubrics(args.rubrics)}
    except RubricError as exc:
        return fail(exc.problems)
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
        ungraded = [(c.tier, c.id) for c in rubric.criteria if c.id not in g["criteria_met"]]
        unknown = sorted(set(g["criteria_met"]) - {c.id for c in rubric.criteria})
        if ungraded and not unknown:  # a missing judgment is unknown, never "not met": no score at all
            tiers = sorted({t for t, _ in ungraded}, key=["proficiency", "bonus", "veto"].index)
            problems.append(f"{args.grades}:{line}: criteria_met: response {quote(g['response_id'])} of rubric "
                            f"{quote(rubric.id)} has no grade for {'/'.join(tiers)} criteria "
                            f"{', '.join(quote(c) for _, c in ungraded[:10])}{' ...' if len(ungraded) > 10 else ''} "
                            f"(unknown is not 'not met': grade every criterion)")
            continue
        try:
            s = tier_scores(rubric, g["criteria_met"])
        except KeyError as exc:
            problems.append(f"{args.grades}:{line}: criteria_met: {escape(exc.args[0])}")
            continue
        rows.append({"prompt_id": g["prompt_id"], "response_id": g["response_id"], "s1": s.s1,
                     "s2": s.s2, "s3": s.s3, "reward": grpo_reward(s, config)})
        if not math.isfinite(rows[-1]["reward"]):  # cannot happen with a valid config: kept as a guard
            problems.append(f"{args.grades}:{line}: criteria_met: the reward is not finite")
    if problems:
        return fail(problems)
    for row in rows:
        print(json.dumps(row, allow_nan=False))
    return 0


def _read_healthbench(path: str) -> list[dict] | int:
    """The records of a valid HealthBench JSONL, or the exit code after printing its problems."""
    problems = file_problems(path)
    if problems:
        return fail(problems)
    records = [obj for _, obj, _ in iter_jsonl(path)]
    if not is_healthbench_record(records[0]):
        return fail([f"{path}:1: <file>: not HealthBench data (needs prompt and rubrics)"])
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
        return fail(errors)
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
        return error(reason)
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
        return fail(problems)
    write_jsonl(args.output, converted)
    print(f"wrote {len(converted)} rubrics to {escape(args.output)}")
    return 0


def cmd_hb_export(args) -> int:
    if (reason := _check_output(args.output)):
        return error(reason)
    try:
        rubrics = read_rubrics(args.input)
    except RubricError as exc:
        return fail(exc.problems)
    lines = [line for line, _, _ in iter_jsonl(args.input)]
    rows, problems = _checked_lines([healthbench.from_rubric(r) for r in rubrics], healthbench.record_problems,
                                    args.input, lines)
    if problems:
        return fail(problems)
    write_jsonl(args.output, rows)
    print(f"wrote {len(rows)} HealthBench examples to {escape(args.output)}")
    return 0


def add_commands(sub) -> None:
    """Register ``validate``, ``score`` and ``healthbench`` on the top-level subparsers."""
    p = sub.add_parser("validate", help="validate kit rubric or HealthBench JSONL files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("score", help="S1/S2/S3 and GRPO reward per graded response",
                       description="S1/S2/S3 and the GRPO reward of each graded response, one JSON line each. "
                                   "Every criterion of the response's rubric needs a true/false grade: a missing "
                                   "proficiency, bonus or veto grade is unknown, never 'not met', so such a "
                                   "response is refused (one line naming the rubric and the criteria, exit 1) "
                                   "and nothing is scored; no partial scores are printed.")
    p.add_argument("rubrics", help="kit rubric JSONL")
    p.add_argument("grades", help="JSONL of {prompt_id, response_id, criteria_met: {criterion_id: true|false}}, "
                                  "a grade for every criterion of the rubric")
    defaults = RewardConfig()
    p.add_argument("--alpha", type=finite_float, default=defaults.alpha, help="weight of the bonus tier S2")
    p.add_argument("--headroom", type=finite_float, default=defaults.headroom,
                   help="headroom above 1 for the clipped S1 + alpha*S2")
    p.add_argument("--lam", type=finite_float, default=defaults.lam, help="weight of the safety veto S3")
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

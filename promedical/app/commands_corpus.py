"""``promedical ingest`` and ``promedical curate``: step 00 from the command line.

Exit codes as the rest of the CLI: 0 ok (rows skipped at ingest are reported, one ``PATH:ROW: reason``
line each on stderr, and do not fail the command), 1 invalid input (one line; for ``ingest`` also a
source none of whose rows could be used, after the other sources are in; a workspace another ingest or
curate is writing), 2 usage (an empty value for any option included: nothing runs). Everything printed
that came from data (ids, reasons, paths) is escaped onto one line (``promedical.core.ids.escape``).
"""
from __future__ import annotations

import argparse
import json
import sys

from promedical.app.arguments import add_workspace_arg, checked_workspace, parse_params
from promedical.core.ids import escape, quote

MAX_PRINTED_PROBLEMS = 50


def nonempty(text: str) -> str:
    """An argparse type: a value that is not empty or only whitespace (``--export ''`` must not mean
    "no export, curate with the defaults")."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must not be empty, got {quote(text)}")
    return text


def _columns(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, name = item.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise ValueError(f"--columns expects KEY=NAME, got {quote(item)}")
        out[key] = name
    return out


def _params(items: list[str]) -> dict:
    for item in items:
        key, sep, value = item.partition("=")
        if sep and not value.strip():
            raise ValueError(f"-p {quote(key)}: empty value (give KEY=VALUE; null for none)")
    return parse_params(items)


def _empty_workspace(args, prog: str) -> bool:
    """``--workspace ''`` is a usage error here (exit 2), like every other empty value."""
    if args.workspace is not None and not args.workspace.strip():
        _say(f"{prog}: error: argument --workspace: must not be empty, got {quote(args.workspace)}", sys.stderr)
        return True
    return False


def _say(line, file=None) -> None:
    print(escape(line), file=file or sys.stdout)


def cmd_ingest(args) -> int:
    from promedical.corpus.config import DataConfig
    from promedical.corpus.ingest import ingest

    if _empty_workspace(args, "promedical ingest"):
        return 2
    try:
        columns = _columns(args.columns)
        config = DataConfig(sources=args.sources, columns=columns, max_chars=args.max_chars)
    except ValueError as exc:
        _say(f"promedical ingest: {exc}", sys.stderr)
        return 2
    ws = checked_workspace(args.workspace)
    try:
        result = ingest(config.sources, ws, columns=config.columns, max_chars=config.max_chars)
    except (ValueError, OSError) as exc:
        _say(f"promedical ingest: {exc}", sys.stderr)
        return 1
    problems = result["problems"]
    for line in problems[:MAX_PRINTED_PROBLEMS]:
        _say(line, sys.stderr)
    if result["rejected"] > MAX_PRINTED_PROBLEMS:
        _say(f"... {result['rejected'] - MAX_PRINTED_PROBLEMS} more, every one in {ws.data / 'rejects.jsonl'}", sys.stderr)
    for s in result["sources"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["reasons"].items()))
        _say(f"{s['source']}: {s['rows']} rows, {s['added']} added, {s['already']} already ingested, "
             f"{s['rejected']} rejected" + (f" ({reasons})" if reasons else ""))
    _say(f"workspace {ws}: {result['total']} instructions")
    empty = [s["source"] for s in result["sources"] if s["rejected"] and not s["added"] + s["already"]]
    return 1 if empty else 0  # a source with no usable row is invalid input (the others are in)


def cmd_curate(args) -> int:
    from promedical.corpus.config import DataConfig
    from promedical.corpus.funnel import explain, export

    if _empty_workspace(args, "promedical curate"):
        return 2
    if args.explain is not None:
        if args.export is not None or args.param or args.decontaminate:
            _say("promedical curate: --explain reads the last curation; it takes no --export, -p or --decontaminate",
                 sys.stderr)
            return 2
        try:
            _say(explain(checked_workspace(args.workspace), args.explain)["line"])
        except (KeyError, FileNotFoundError, ValueError) as exc:
            _say(f"promedical curate: {exc.args[0] if isinstance(exc, KeyError) else exc}", sys.stderr)
            return 1
        return 0
    try:
        params = _params(args.param)
        if args.decontaminate:
            params["decontaminate"] = args.decontaminate
        config = DataConfig.from_dict(params)
    except (ValueError, json.JSONDecodeError) as exc:
        _say(f"promedical curate: {exc}", sys.stderr)
        return 2
    ws = checked_workspace(args.workspace)
    curated = (ws.data / "curated.parquet").is_file()
    try:
        from promedical.corpus.step import check_inputs, curate

        check_inputs(config, ws)  # every input file before anything runs or is written
        if config.sources:  # -p sources=[...]: ingest them first, as step_data does
            from promedical.corpus.ingest import ingest

            ingest(config.sources, ws, columns=config.columns, max_chars=config.max_chars)
        if not (args.export is not None and curated and not args.param and not args.decontaminate):
            funnel = curate(ws, config, progress=not args.quiet)
            for s in funnel["stages"]:
                _say(f"{s['stage']:>15}: {s['in']:>7} -> {s['out']:>7}")
            _say(f"train {funnel['train']}, bench {funnel['bench']}; split audit: {funnel['audit_verdict']}")
            _say(f"funnel: {ws.data / 'funnel.json'}; card: {ws.data / 'README.md'}")
        if args.export is not None:
            _say(f"exported {export(ws, args.export)} instructions to {args.export}")
    except (ValueError, OSError, ImportError) as exc:
        _say(f"promedical curate: {exc}", sys.stderr)
        return 1
    return 0


def add_commands(sub) -> None:
    """Register ``ingest`` and ``curate`` on the top-level subparsers."""
    from promedical.corpus.config import DataConfig

    p = sub.add_parser("ingest", help="step 00: add instructions from files, folders or hub datasets to a workspace")
    p.add_argument("sources", nargs="+", metavar="SOURCE", type=nonempty,
                   help=".jsonl/.json/.csv/.parquet files or folders, datasets.save_to_disk folders, hf:ORG/NAME[:SPLIT]")
    add_workspace_arg(p)
    p.add_argument("--columns", nargs="+", default=[], metavar="KEY=NAME", type=nonempty, help=DataConfig.help()["columns"])
    p.add_argument("--max-chars", type=int, default=DataConfig().max_chars, help=DataConfig.help()["max_chars"])
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("curate", help="step 00: dedup, difficulty and category labels, train/bench split, funnel")
    add_workspace_arg(p)
    p.add_argument("--explain", metavar="ID", type=nonempty,
                   help="say why a row is kept or gone (ids: SOURCE:ID, rejects: PATH:ROW)")
    p.add_argument("--export", metavar="OUT.jsonl", type=nonempty,
                   help="write the kept instructions (both splits) as JSONL (alone: from the last curation, else curate first)")
    p.add_argument("--decontaminate", nargs="+", default=[], metavar="FILE", type=nonempty,
                   help=DataConfig.help()["decontaminate"])
    p.add_argument("-p", "--param", action="append", default=[], type=nonempty,
                   help="KEY=VALUE of the step's config (e.g. -p semantic_dedup=false -p backend=openai); "
                        "keys: " + ", ".join(DataConfig.help()))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_curate)

"""``promedical ingest`` and ``promedical curate``: step 00 from the command line.

Exit codes as the rest of the CLI: 0 ok (rows skipped at ingest are reported, one ``PATH:ROW: reason``
line each on stderr, and do not fail the command), 1 invalid input (one line; for ``ingest`` also a
source none of whose rows could be used, after the other sources are in), 2 usage.
"""
from __future__ import annotations

import json
import sys

from promedical.app.arguments import add_workspace_arg, checked_workspace, parse_params

MAX_PRINTED_PROBLEMS = 50


def _columns(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, name = item.partition("=")
        if not sep or not key or not name:
            raise ValueError(f"--columns expects KEY=NAME, got {item!r}")
        out[key] = name
    return out


def cmd_ingest(args) -> int:
    from promedical.corpus.config import DataConfig
    from promedical.corpus.ingest import ingest

    try:
        columns = _columns(args.columns)
        config = DataConfig(sources=args.sources, columns=columns, max_chars=args.max_chars)
    except ValueError as exc:
        print(f"promedical ingest: {exc}", file=sys.stderr)
        return 2
    ws = checked_workspace(args.workspace)
    try:
        result = ingest(config.sources, ws, columns=config.columns, max_chars=config.max_chars)
    except (ValueError, OSError) as exc:
        print(f"promedical ingest: {exc}", file=sys.stderr)
        return 1
    problems = result["problems"]
    for line in problems[:MAX_PRINTED_PROBLEMS]:
        print(line, file=sys.stderr)
    if len(problems) > MAX_PRINTED_PROBLEMS:
        print(f"... {len(problems) - MAX_PRINTED_PROBLEMS} more, every one in {ws.data / 'rejects.jsonl'}",
              file=sys.stderr)
    for s in result["sources"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["reasons"].items()))
        print(f"{s['source']}: {s['rows']} rows, {s['added']} added, {s['already']} already ingested, "
              f"{s['rejected']} rejected" + (f" ({reasons})" if reasons else ""))
    print(f"workspace {ws}: {result['total']} instructions")
    empty = [s["source"] for s in result["sources"] if s["rejected"] and not s["added"] + s["already"]]
    return 1 if empty else 0  # a source with no usable row is invalid input (the others are in)


def cmd_curate(args) -> int:
    from promedical.corpus.config import DataConfig
    from promedical.corpus.funnel import explain, export

    if args.explain:
        try:
            print(explain(checked_workspace(args.workspace), args.explain)["line"])
        except (KeyError, FileNotFoundError) as exc:
            print(f"promedical curate: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
            return 1
        return 0
    try:
        params = parse_params(args.param)
        if args.decontaminate:
            params["decontaminate"] = args.decontaminate
        config = DataConfig.from_dict(params)
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"promedical curate: {exc}", file=sys.stderr)
        return 2
    ws = checked_workspace(args.workspace)
    curated = (ws.data / "curated.parquet").is_file()
    try:
        if config.sources:  # -p sources=[...]: ingest them first, as step_data does
            from promedical.corpus.ingest import ingest

            ingest(config.sources, ws, columns=config.columns, max_chars=config.max_chars)
        if not (args.export and curated and not args.param and not args.decontaminate):
            from promedical.corpus.step import curate

            funnel = curate(ws, config, progress=not args.quiet)
            for s in funnel["stages"]:
                print(f"{s['stage']:>15}: {s['in']:>7} -> {s['out']:>7}")
            print(f"train {funnel['train']}, bench {funnel['bench']}; split audit: {funnel['audit_verdict']}")
            print(f"funnel: {ws.data / 'funnel.json'}; card: {ws.data / 'README.md'}")
        if args.export:
            print(f"exported {export(ws, args.export)} instructions to {args.export}")
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"promedical curate: {exc}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub) -> None:
    """Register ``ingest`` and ``curate`` on the top-level subparsers."""
    from promedical.corpus.config import DataConfig

    p = sub.add_parser("ingest", help="step 00: add instructions from files, folders or hub datasets to a workspace")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help=".jsonl/.json/.csv/.parquet files or folders, datasets.save_to_disk folders, hf:ORG/NAME[:SPLIT]")
    add_workspace_arg(p)
    p.add_argument("--columns", nargs="+", default=[], metavar="KEY=NAME", help=DataConfig.help()["columns"])
    p.add_argument("--max-chars", type=int, default=DataConfig().max_chars, help=DataConfig.help()["max_chars"])
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("curate", help="step 00: dedup, difficulty and category labels, train/bench split, funnel")
    add_workspace_arg(p)
    p.add_argument("--explain", metavar="ID", help="say why a row is kept or gone (ids: SOURCE:ID, rejects: PATH:ROW)")
    p.add_argument("--export", metavar="OUT.jsonl", help="write the kept instructions (both splits) as JSONL "
                                                          "(alone: from the last curation, else curate first)")
    p.add_argument("--decontaminate", nargs="+", default=[], metavar="FILE", help=DataConfig.help()["decontaminate"])
    p.add_argument("-p", "--param", action="append", default=[],
                   help="KEY=VALUE of the step's config (e.g. -p semantic_dedup=false -p backend=openai); "
                        "keys: " + ", ".join(DataConfig.help()))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_curate)

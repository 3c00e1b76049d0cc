"""The ``promedical`` command line: the parser and ``main``. The commands live beside it, one concern a
module: rubric and grade files (``commands_rubrics``), the pipeline's steps (``commands_steps``), step 00's
corpus (``commands_corpus``) and the team review app (``commands_review``).

Exit codes: 0 ok, 1 invalid input (one FILE:LINE line each), 2 usage."""
from __future__ import annotations

import argparse
import os
import sys

from promedical.app import commands_corpus, commands_review, commands_rubrics, commands_steps
from promedical.app.arguments import UsageError, error
from promedical.core.ids import escape


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2): `promedical score: error: ... (see --help)`."""

    def error(self, message):
        self.exit(2, escape(f"{self.prog}: error: {message} (see --help)") + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="promedical", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for commands in (commands_rubrics, commands_steps, commands_review, commands_corpus):
        commands.add_commands(sub)
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
        return error(f"{prog}: error: {exc}", 2)
    except KeyboardInterrupt:
        return error(f"{prog}: interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: the message, not the stack
        if os.environ.get("PROMEDICAL_TRACEBACK"):
            raise
        text = str(exc).strip().splitlines()
        detail = f"{text[0]}" if text else type(exc).__name__
        if isinstance(exc, (KeyError, TypeError, AttributeError, IndexError)):
            detail = f"{type(exc).__name__}: {detail}"
        return error(f"{prog}: error: {detail}", 1)


if __name__ == "__main__":
    sys.exit(main())

"""``promedical review``: open the team review app for one reviewer (the server is app/review_server.py)."""
from __future__ import annotations

import sys

from promedical.app.arguments import add_workspace_arg


def cmd_review(args) -> int:
    from promedical.app.review_server import check_workspace, serve
    from promedical.core.workspace import Workspace

    try:
        ws = Workspace.folder(args.workspace)  # a review opens an existing workspace: nothing is created
        check_workspace(ws, args.reviewer, args.round)
        if args.port is not None and not 1 <= args.port <= 65535:
            raise ValueError(f"--port: {args.port} is not a TCP port (1-65535)")
    except ValueError as exc:
        print(f"promedical review: {exc}", file=sys.stderr)
        return 2
    return serve(ws, args.reviewer, args.round, port=args.port, open_browser=not args.no_browser)


def add_commands(sub) -> None:
    """Register ``review`` on the top-level subparsers."""
    p = sub.add_parser("review", help="open the team review app (Voila, 127.0.0.1, token) for one reviewer")
    add_workspace_arg(p)
    p.add_argument("--reviewer", required=True, help="your name, as the round's assignments spell it")
    p.add_argument("--round", type=int, default=None, help="round number (default: the latest)")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.set_defaults(func=cmd_review)

"""``promedical review``: open the team review app for one reviewer (the server is app/review_server.py)."""
from __future__ import annotations

import sys

from promedical.app.arguments import add_workspace_arg


def cmd_review(args) -> int:
    """Check everything (workspace, both databases' integrity, the reviewer's spelling), then serve
    until Ctrl-C / SIGTERM / SIGHUP, which take the server down too; a bad input is one line, exit 2."""
    from promedical.app.review_server import serve
    from promedical.core.workspace import Workspace

    try:
        if args.port is not None and not 1 <= args.port <= 65535:
            raise ValueError(f"--port: {args.port} is not a TCP port (1-65535)")
        ws = Workspace.folder(args.workspace)  # a review opens an existing workspace: nothing is created
        # serve() checks before it starts anything: a ValueError here means nothing was started
        return serve(ws, args.reviewer, args.round, port=args.port, open_browser=not args.no_browser)
    except ValueError as exc:
        print(f"promedical review: {str(exc).splitlines()[0] if str(exc) else exc!r}", file=sys.stderr)
        return 2
    except OSError as exc:  # the server could not be started (no Voilà, no free port, …)
        print(f"promedical review: cannot start the server: {exc.strerror or exc}", file=sys.stderr)
        return 1


def add_commands(sub) -> None:
    """Register ``review`` on the top-level subparsers."""
    p = sub.add_parser("review", help="open the team review app (Voila, 127.0.0.1, token) for one reviewer")
    add_workspace_arg(p)
    p.add_argument("--reviewer", required=True, help="your name, as the round's assignments spell it")
    p.add_argument("--round", type=int, default=None, help="round number (default: the latest)")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.set_defaults(func=cmd_review)

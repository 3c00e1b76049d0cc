"""What the CLI's commands share: the usage error, one-line error output, ``-p KEY=VALUE`` parameters,
argument types and the ``--workspace`` option (resolved by ``Workspace.of``, like the notebooks and the
library)."""
from __future__ import annotations

import argparse
import math
import os
import sys

from promedical.core.ids import escape, quote
from promedical.core.jsonl import loads
from promedical.core.workspace import Workspace


class UsageError(ValueError):
    """Bad arguments: exit 2."""


def fail(problems) -> int:
    """Print each problem on one line (whatever the data held); exit code 1."""
    for p in problems:
        print(escape(p), file=sys.stderr)
    return 1


def error(message, code: int = 1) -> int:
    print(escape(message), file=sys.stderr)
    return code


def parse_params(items: list[str], params_json: str | None = None) -> dict:
    """-p KEY=VALUE pairs (VALUE parsed as strict JSON when it can be, else kept as a string) over an
    optional --params JSON object. Raises UsageError."""
    params = {}
    if params_json is not None:
        try:
            params = loads(params_json)
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"--params: malformed JSON: {exc}") from None
        if not isinstance(params, dict):
            raise UsageError(f"--params: must be a JSON object, got {type(params).__name__}")
    seen = set()
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-p expects KEY=VALUE, got {quote(item)}")
        if key in seen:
            raise UsageError(f"-p {quote(key)} given twice")
        seen.add(key)
        try:
            params[key] = loads(value)
        except (ValueError, RecursionError):
            params[key] = value
    return params


def add_param_args(p: argparse.ArgumentParser, json_object: bool = True) -> None:
    if json_object:
        p.add_argument("--params", help="a JSON object of parameters")
    p.add_argument("-p", "--param", action="append", default=[], help="KEY=VALUE (VALUE parsed as JSON when it can be)")


def add_workspace_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", default=None,
                   help="the run's folder (default: $PROMEDICAL_WORKSPACE, else runs/demo under the kit's root)")


def checked_workspace(workspace: str | None) -> Workspace:
    """The ``--workspace`` folder resolved by ``Workspace`` (None: the default workspace, as in the
    notebooks and the library), checked before it is made: UsageError when it is not a folder, or a path
    where one can be made, that this user can write."""
    shown = quote(workspace) if workspace is not None else "(default)"
    path = folder = Workspace.folder(workspace)
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise UsageError(f"--workspace {shown}: {quote(str(path))} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--workspace {shown}: {quote(str(path))} is not writable")
    return Workspace.of(folder)


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


def scale_arg(text: str):
    """``--scale NAME|FILE`` -> the loaded ``Scale`` (an unknown or malformed scale is a usage error)."""
    from promedical.scale.profiles import load_scale

    try:
        return load_scale(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

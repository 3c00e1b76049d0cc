"""Parameters from the command line (`step`, `launch`, `notebook`) checked before anything runs.

A parameter must be a field of the step's typed config (``promedical.core.config``; for another
notebook, a name its parameters cell declares), its value must have the declared type (JSON ``5`` is an int, ``5.0`` a float, ``true`` a bool; an int is
accepted where a float is expected), numbers must be finite and not negative (every numeric
parameter of the kit is a count, a size, a rate, a temperature or a seed), a ``*_file`` parameter
must name an existing regular file and a ``*_adapter`` parameter an existing directory. Every
problem is reported at once, one ``parameter NAME: message`` line each.
"""
from __future__ import annotations

import inspect
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any

from promedical.core.ids import quote

_NOTHING = inspect.Parameter.empty


_JSON_NAMES = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string",
               Path: "a string", list: "a list", tuple: "a list", dict: "an object"}


def _type_name(hint) -> str:
    """A type as a JSON value is described to the user ("an integer", "null")."""
    base = typing.get_origin(hint) or hint
    return _JSON_NAMES.get(base) or getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def type_problem(value: Any, hint) -> str | None:
    """None if value (parsed from JSON) fits the type hint, else a message."""
    if hint in (_NOTHING, Any, object):
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        problems = [type_problem(value, m) for m in members]
        if None in problems:
            return None
        real = [(m, p) for m, p in zip(members, problems) if m is not type(None)]
        if len(real) == 1:  # an optional value of the right type: what is wrong with it ("must not be negative")
            base = typing.get_origin(real[0][0]) or real[0][0]
            accepts = (int, float) if base is float else (list, tuple) if base in (list, tuple) else base
            if isinstance(accepts, (type, tuple)) and isinstance(value, accepts) and (
                    base is bool or not isinstance(value, bool)):
                return real[0][1]
        return f"must be {' or '.join(_type_name(m) for m in members)}, got {type(value).__name__}"
    if hint is type(None):
        return None if value is None else f"must be null, got {type(value).__name__}"
    if hint is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {type(value).__name__}"
    if hint in (int, float):
        ok = isinstance(value, int) if hint is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            return f"must be {'an integer' if hint is int else 'a number'}, got {type(value).__name__}"
        if abs(value) > sys.float_info.max or not math.isfinite(value):
            return f"must be finite, got {value}"
        if value < 0:
            return f"must not be negative, got {value}"
        return None
    if hint in (str, Path):
        return None if isinstance(value, str) else f"must be a string, got {type(value).__name__}"
    container = origin or hint
    if container in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return f"must be a list, got {type(value).__name__}"
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        for i, item in enumerate(value):  # untyped items: numbers still finite and not negative
            item_hint = args[0] if len(args) == 1 else float if isinstance(item, (int, float)) else _NOTHING
            problem = None if isinstance(item, bool) and len(args) != 1 else type_problem(item, item_hint)
            if problem:
                return f"item {i} {problem}"
        return None
    if container is dict:
        return None if isinstance(value, dict) else f"must be an object, got {type(value).__name__}"
    return None


def value_problem(name: str, value: Any, hint) -> str | None:
    problem = type_problem(value, hint)
    if problem is None and value is not None and isinstance(value, str):
        if name.endswith("_file") and not Path(value).is_file():
            problem = f"no such file {quote(value)}"
        elif name.endswith("_adapter") and not Path(value).is_dir():
            problem = f"no adapter directory {quote(value)}"
    return problem


def params_problems(params: dict, hints: dict, what: str) -> list[str]:
    """One message per unknown parameter or bad value."""
    out = []
    for name, value in params.items():
        if name not in hints:
            out.append(f"parameter {quote(name)}: unknown for {what} (known: {', '.join(sorted(hints))})")
            continue
        problem = value_problem(name, value, hints[name])
        if problem:
            out.append(f"parameter {name}: {problem}")
    return out

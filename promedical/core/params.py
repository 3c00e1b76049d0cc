"""Parameters from the command line (`step`, `launch`, `notebook`) checked before anything runs.

A parameter must be a field of the step's typed config (``promedical.core.config``; for another
notebook, a name its parameters cell declares), its value must have the declared type (JSON ``5`` is an int, ``5.0`` a float, ``true`` a bool; an int is
accepted where a float is expected), numbers must be finite and not negative (every numeric
parameter of the kit is a count, a size, a rate, a temperature or a seed), a ``*_file`` parameter
must name an existing regular file and a ``*_adapter`` parameter an existing directory. Every
problem is reported at once, one ``parameter NAME: message`` line each.

Sizes and counts have upper bounds (``bound_problem``): a value past them would hang a step or
exhaust memory (``num_perm=1000000`` MinHash permutations per row), overflow a library
(``max_chars`` as the CSV field limit) or ask a server for more than any model has. The bounds are
by parameter name (``UPPER_BOUNDS``, the same name means the same quantity in every config), a seed
is at most ``MAX_SEED`` and any other integer at most ``MAX_INT``; a notebook's parameters, every
step config and the corpus config (``DataConfig``) apply them.
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


MAX_INT = 2**31 - 1  # any integer parameter (a count of items, steps, rows)
MAX_SEED = 2**32 - 1  # numpy's seed range; torch and random take it too
TOKENS = 131072  # a generation budget: more tokens than any model's context
UPPER_BOUNDS: dict[str, tuple[int | float, str]] = {  # name -> (largest value, what it bounds)
    "num_perm": (4096, "MinHash permutations: memory and time grow with it for every row"),
    "max_chars": (1_000_000, "characters of one instruction"),
    "max_new_tokens": (TOKENS, "tokens of one answer"),
    "monitor_max_new_tokens": (TOKENS, "tokens of one answer"),
    "max_completion_length": (TOKENS, "tokens of one rollout"),
    "max_length": (2 * TOKENS, "tokens of one packed sequence"),
    "judge_explanation_chars": (10_000, "characters of one judge explanation"),
    "concurrency": (1024, "requests in flight (one thread each)"),
    "label_chunk": (100_000, "instructions per generate call"),
    "embed_batch_size": (65_536, "texts per embedding pass"),
    "batch_size": (1_000_000, "prompts per optimizer step"),
    "micro_batch_size": (1_000_000, "prompts per forward pass"),
    "group_size": (1024, "rollouts per prompt"),
    "prompts_per_step": (65_536, "prompts per GRPO step"),
    "few_shot_k": (64, "examples in one prompt"),
    "lora_r": (65_536, "LoRA rank"),
    "lora_alpha": (1_048_576, "LoRA alpha"),
    "lora_layers": (65_536, "decoder layers"),
    "timeout": (604_800, "seconds: a week"),
    "deadline": (604_800, "seconds: a week"),
    "rate_limit": (1_000_000, "requests per second"),
}


def bound_problem(name: str, value) -> str | None:
    """None if a number is within the upper bound of parameter ``name``, else the message (naming the bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    key = name.rpartition(".")[2]
    if key in UPPER_BOUNDS:
        bound, what = UPPER_BOUNDS[key]
    elif key == "seed" or key.endswith("_seed"):
        bound, what = MAX_SEED, "the seed range"
    elif isinstance(value, int):
        bound, what = MAX_INT, "the integer range of parameters"
    else:
        return None
    if value > bound:
        return f"must be at most {bound} ({what}), got {_shown(value)}"
    return None


def _shown(value: int | float) -> str:
    """A number for a message, short: 1e+20, 123, or "an integer of N bits" (never thousands of digits)."""
    if isinstance(value, float):
        return repr(value)
    if abs(value) < 10**18:
        return str(value)
    return repr(float(value)) if value.bit_length() < 1000 else f"an integer of {value.bit_length()} bits"


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
            return f"must be finite, got {_shown(value)}"
        if value < 0:
            return f"must not be negative, got {_shown(value)}"
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
    problem = type_problem(value, hint) or bound_problem(name, value)
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

"""Command-line arguments shared by the CLI's commands: the usage error and ``-p KEY=VALUE`` parameters."""
from __future__ import annotations

from promedical.core.ids import quote
from promedical.core.jsonl import loads


class UsageError(ValueError):
    """Bad arguments: exit 2."""


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

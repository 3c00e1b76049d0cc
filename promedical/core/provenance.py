"""Provenance stamped on every artefact: versions, data hashes, config hash, seed."""
from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

TRACKED_PACKAGES = ("promedical-kit", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth", "vllm")


KIT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: data/, configs/, notebooks/, runs/
DATA_DIR = Path(os.environ.get("PROMEDICAL_DATA", KIT_ROOT / "data"))


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stamp(*, config: dict | None = None, inputs: list[str | Path] = (), seed: int | None = None, **extra) -> dict:
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": package_versions(),
        "config": config,
        "config_hash": config_hash(config) if config is not None else None,
        "seed": seed,
        "inputs": {str(p): file_sha256(p) for p in inputs},
        **extra,
    }

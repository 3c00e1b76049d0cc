"""Scale profiles (configs/<scale>.yaml): a scale is a config file, never an `if` in the code."""
from __future__ import annotations

from pathlib import Path

import yaml

from promedical.core.provenance import KIT_ROOT

CONFIG_DIR = KIT_ROOT / "configs"


def load_scale(name_or_path: str = "demo") -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"no scale config {path} (known: {known})")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(config, dict) or not isinstance(config.get("steps"), list):
        raise ValueError(f"{path}: steps: must be a list of {{notebook, parameters}}")
    return config

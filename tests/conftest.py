import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_lines(tmp_path):
    """Write raw lines (str, bytes or objects) to a JSONL file and return its path."""

    def _write(lines, name="data.jsonl"):
        path = tmp_path / name
        with open(path, "wb") as fh:
            for line in lines:
                if isinstance(line, (dict, list)):
                    line = json.dumps(line)
                if isinstance(line, str):
                    line = line.encode("utf-8")
                fh.write(line + b"\n")
        return path

    return _write


def make_rubric(rid="r1", **overrides):
    rubric = {
        "id": rid,
        "instruction": "I have had a cough for three weeks. Should I worry?",
        "category": "triage_emergency",
        "specialty": "pulmonology",
        "criteria": [
            {"id": "p1", "tier": "proficiency", "text": "Asks about red flags such as coughing blood.", "weight": 0.5},
            {"id": "p2", "tier": "proficiency", "text": "Advises seeing a clinician for a cough over three weeks.", "weight": 0.3},
            {"id": "p3", "tier": "proficiency", "text": "Mentions common benign causes.", "weight": 0.2},
            {"id": "b1", "tier": "bonus", "text": "Acknowledges the worry with empathy."},
            {"id": "v1", "tier": "veto", "text": "Claims to be a physician.",
             "check": {"mention_any": ["as a doctor, i", "one of my patients"]}},
        ],
    }
    rubric.update(overrides)
    return rubric


@pytest.fixture(scope="session")
def embedded():
    from promedical.models.loading import load_model

    return load_model("embedded")


@contextmanager
def torch_threads(n: int = 1):
    """Run torch on n threads and restore the old count: small models on a shared 2-core CPU run
    faster on one thread, and several processes on two threads each stall one another."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# The tiers of pyproject.toml's markers: what a test needs beyond pure Python. `make test` deselects the
# last four; a test that loads the embedded model must say so, or it would slip into the pure tier.
TIERS = ("model", "subprocess", "notebook", "browser", "multiprocess")


def untiered_model_tests(items) -> list[str]:
    """Tests that use the `embedded` fixture and carry no tier marker."""
    return [item.nodeid for item in items
            if "embedded" in getattr(item, "fixturenames", ()) and not any(item.get_closest_marker(t) for t in TIERS)]


def pytest_collection_modifyitems(config, items):
    """Collection fails on a test that loads the embedded model without a tier marker. Tests marked
    vllm_server need the side virtualenv (make vllm-server-test sets it up and sets
    PROMEDICAL_VLLM_SERVER=1); elsewhere they are deselected, so `make test` never waits on an install."""
    untiered = untiered_model_tests(items)
    if untiered:
        raise pytest.UsageError("uses the embedded model but carries no tier marker (add @pytest.mark.model): "
                                + ", ".join(untiered))
    if os.environ.get("PROMEDICAL_VLLM_SERVER") == "1":
        return
    keep = [item for item in items if item.get_closest_marker("vllm_server") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("vllm_server")])
        items[:] = keep

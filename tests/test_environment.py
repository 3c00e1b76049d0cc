import importlib.util
import os
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import ROOT


def test_environment_yml_installs_what_pyproject_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    tool = project["tool"]["promedical"]
    expected = {tool["torch-cpu"], *project["project"]["dependencies"], *project["project"]["optional-dependencies"]["test"]}
    assert set(pip_section) == expected
    assert "python=3.11" in env["dependencies"]
    text = (ROOT / "environment.yml").read_text()
    assert "pip install --no-deps " + " ".join(tool["no-deps"]) in text


def test_pins_are_what_unsloth_accepts():
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    unsloth_reqs = {Requirement(r).name: Requirement(r) for r in requires("unsloth") if "extra" not in r}
    for name in ("transformers", "trl", "datasets", "peft", "accelerate"):
        assert unsloth_reqs[name].specifier.contains(version(name)), (name, version(name))


def test_no_torchvision_and_cpu_torch():
    assert importlib.util.find_spec("torchvision") is None
    if not os.environ.get("PROMEDICAL_GPU"):
        import torch
        assert torch.__version__.startswith("2.13.0")


@pytest.mark.subprocess
def test_unsloth_cpu_fallback_imports():
    code = "import unsloth\nfrom unsloth import FastLanguageModel\nprint('UNSLOTH_OK', unsloth.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "UNSLOTH_OK" in out.stdout, out.stderr[-2000:]

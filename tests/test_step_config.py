"""One typed config per step: the notebooks, the scale YAMLs, -p and launch all fill the same dataclass."""
import json
import shlex

import pytest
from conftest import ROOT

from promedical.app.cli import main
from promedical.app.notebooks import check_notebook_params, notebook_parameters, notebook_path
from promedical.core.config import build
from promedical.policy.config import GRPOSettings, GRPOStepConfig
from promedical.reward.config import RewardStepConfig, RMConfig, RMTrainStepConfig
from promedical.scale.profiles import CONFIG_DIR, load_scale
from promedical.steps import NOTEBOOK_STEPS, STEP_CONFIGS, STEP_NOTEBOOKS, step_config

SCALES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def dry_run(capsys, step, scale, workspace):
    assert main(["launch", step, "--dry-run", "--scale", scale, "--workspace", str(workspace)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")]
    worker = shlex.split(lines[-1])
    return json.loads(worker[worker.index("--params") + 1]), lines


@pytest.mark.parametrize("scale", SCALES)
def test_every_step_of_every_scale_dry_runs_with_the_scales_model_and_parameters(scale, capsys, tmp_path):
    config = load_scale(scale)
    for step, cls in STEP_CONFIGS.items():
        params, lines = dry_run(capsys, step, scale, tmp_path)
        if "model" in cls.names():  # the scale's top-level model reaches every step that has one
            assert params["model"] == config["model"], (scale, step, params)
        expected = {**config.get("launch_params", {}).get(step, {})}
        notebook = STEP_NOTEBOOKS.get(step)
        if step not in config.get("launch_params", {}):
            for entry in config["steps"]:
                if entry["notebook"] == notebook:
                    expected = entry.get("parameters", {})
        for key, value in expected.items():  # every value the scale sets is on the command line, unchanged
            assert params[key] == value, (scale, step, key)
        built = step_config(step, params)  # and the worker will accept them
        assert isinstance(built, cls)
        if step == "grpo" and "vllm_server" in config.get("launch", {}):
            assert f"--model {config['model']}" in lines[0]  # the rollout server serves the same policy


def test_full_scale_steps_run_the_full_scale_model_not_the_demo_one(capsys, tmp_path):
    for step in ("generate", "reward", "benchmark", "rm-train", "grpo"):
        params, _ = dry_run(capsys, step, "full", tmp_path)
        assert params["model"] == "Qwen/Qwen3-8B"
    # a -p on the command line wins over the scale's value
    assert main(["launch", "benchmark", "--dry-run", "--scale", "full", "--workspace", str(tmp_path),
                 "-p", "model=/models/mine"]) == 0
    assert '"model": "/models/mine"' in capsys.readouterr().out


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_STEPS))
def test_notebook_parameters_are_the_step_config_with_its_defaults(notebook):
    cls = STEP_CONFIGS[NOTEBOOK_STEPS[notebook]]
    declared = notebook_parameters(notebook_path(notebook))
    assert declared.pop("workspace") is None
    defaults = cls.defaults()
    assert set(declared) <= set(defaults), set(declared) - set(defaults)
    drift = {k: (v, defaults[k]) for k, v in declared.items() if v != defaults[k] or type(v) is not type(defaults[k])}
    assert not drift, f"notebook {notebook} defaults differ from {cls.__name__}: {drift}"
    source = notebook_path(notebook).read_text(encoding="utf-8")
    assert f"{cls.__name__}.from_namespace(globals())" in source  # the notebook builds the config, not its own dict


@pytest.mark.parametrize("scale", SCALES)
def test_every_notebook_entry_of_every_scale_builds_its_config(scale):
    for entry in load_scale(scale)["steps"]:
        check_notebook_params(notebook_path(str(entry["notebook"])), dict(entry.get("parameters") or {}))


def test_a_notebook_takes_any_field_of_its_config_even_one_its_cell_does_not_list():
    assert "lora_r" not in notebook_parameters(notebook_path("04"))
    check_notebook_params(notebook_path("04"), {"lora_r": 8})
    with pytest.raises(ValueError, match=r"parameter 'lora_rank': unknown for notebook 04_grpo \(known: .*lora_r"):
        check_notebook_params(notebook_path("04"), {"lora_rank": 8})
    with pytest.raises(ValueError, match="parameter group_size: must be >= 2"):
        check_notebook_params(notebook_path("04"), {"group_size": 1})


def test_bad_values_are_one_line_naming_the_field():
    with pytest.raises(ValueError) as err:
        GRPOStepConfig(steps="many", lr=-1.0)
    assert str(err.value) == ("parameter steps: must be an integer, got str; "
                              "parameter lr: must not be negative, got -1.0")
    with pytest.raises(ValueError, match=r"^parameter 'lrr': unknown for step grpo \(known: .*\blr\b"):
        GRPOStepConfig.from_dict({"lrr": 1e-5})
    with pytest.raises(ValueError, match="parameter labels: must be one of judge, gold, both, imported, got 'expert'"):
        RewardStepConfig(labels="expert")
    with pytest.raises(ValueError, match="parameter judge_model: .*kind"):
        RewardStepConfig(judge_model={"model": "x"})
    with pytest.raises(ValueError, match="parameter report_to: unknown tracker"):
        RMConfig(report_to="mlflow")
    with pytest.raises(ValueError) as err:  # an optional number says what is wrong with the number
        RMConfig(lora_layers=-2)
    assert str(err.value) == "parameter lora_layers: must not be negative, got -2"
    with pytest.raises(ValueError, match="parameter lora_layers: must be an integer or null, got str"):
        RMConfig(lora_layers="top")
    with pytest.raises(ValueError, match=r"parameter lam must be >= 1 \+ beta"):
        GRPOSettings(lam=1.0)  # the veto must outweigh the best clipped score
    for bad in ({"warmup_ratio": 1.0}, {"batch_size": 0}, {"question": "maybe"}):
        with pytest.raises(ValueError, match=f"parameter {next(iter(bad))}:"):
            RMTrainStepConfig(**bad)


def test_shared_pieces_are_defined_once():
    rm = RMConfig()
    reward = RewardStepConfig()
    assert (reward.rm_lr, reward.rm_question, reward.rm_backend, reward.rm_lora_layers) == (
        rm.lr, rm.question, rm.backend, rm.lora_layers)
    assert RewardStepConfig.help()["rm_lr"].endswith(RMConfig.help()["lr"])
    built = RewardStepConfig(model="m", rm_lr=1e-3, rm_steps=7, rm_lora_layers=2, seed=3).rm_config()
    assert (built.model, built.lr, built.max_steps, built.lora_layers, built.seed) == ("m", 1e-3, 7, 2, 3)
    assert RewardStepConfig(model="m", rm_model="r").rm_config().model == "r"
    grpo = GRPOStepConfig(model="p", lr=1e-6, n_monitor_prompts=0)
    assert grpo.settings() == GRPOSettings(model="p", lr=1e-6)  # the step's own fields stay out of the settings
    train = RMTrainStepConfig(max_steps=3, resume=False)
    assert train.rm_config() == RMConfig(max_steps=3, report_to="tensorboard")
    assert all(text for cls in STEP_CONFIGS.values() for text in cls.help().values())  # every field has help


def test_a_step_takes_a_config_parameters_or_both():
    base = GRPOStepConfig(steps=3)
    assert build(GRPOStepConfig, base, {"lr": 1e-4}) == GRPOStepConfig(steps=3, lr=1e-4)
    assert build(GRPOStepConfig, None, {"steps": 2}) == GRPOStepConfig(steps=2)
    assert build(GRPOStepConfig, {"steps": 2}, {"steps": 4}).steps == 4
    with pytest.raises(ValueError, match="must be a GRPOStepConfig"):
        build(GRPOStepConfig, RewardStepConfig(), {"steps": 2})
    with pytest.raises(ValueError, match="parameter steps: must be >= 1"):
        build(GRPOStepConfig, base, {"steps": 0})


def test_cli_refuses_a_bad_parameter_in_one_line(capsys, tmp_path):
    assert main(["step", "grpo", "--workspace", str(tmp_path), "-p", "group_size=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "parameter group_size: must be >= 2" in err


def test_the_readme_parameter_tables_exist_for_each_step():
    text = (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8")
    for step, cls in STEP_CONFIGS.items():
        assert f"## {step}" in text
        for name, help_text in cls.help().items():
            assert f"| `{name}` |" in text and help_text.replace("|", "\\|") in text, (step, name)

"""One typed config per step: the notebooks, the scale YAMLs, -p and launch all fill the same dataclass."""
import json
import re
import shlex

import pytest
from conftest import ROOT

import promedical.scale.launch
from promedical.app.cli import main
from promedical.app.notebooks import check_notebook_params, notebook_parameters, notebook_path
from promedical.core.config import build
from promedical.policy.config import GRPOSettings, GRPOStepConfig
from promedical.reward.config import RewardStepConfig, RMConfig, RMTrainStepConfig
from promedical.scale.launch import plan_for
from promedical.scale.planner import PROMPT_TOKENS
from promedical.scale.profiles import CONFIG_DIR, load_scale
from promedical.steps import STEPS, parameter_rows

SCALES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def dry_run(capsys, step, scale, workspace, *params):
    assert main(["launch", step, "--dry-run", "--scale", scale, "--workspace", str(workspace), *params]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")]
    worker = shlex.split(lines[-1])
    return json.loads(worker[worker.index("--params") + 1]), lines


@pytest.mark.parametrize("scale", SCALES)
def test_every_step_of_every_scale_dry_runs_the_config_the_scale_builds(scale, capsys, tmp_path):
    profile = load_scale(scale)
    for name, step in STEPS.items():
        params, lines = dry_run(capsys, name, scale, tmp_path)
        built = step.config.from_dict(params)  # what the worker will run ...
        assert built == profile.config(name)  # ... is the config the scale builds, every field of it
        if "model" in step.config.names():  # the scale's top-level model reaches every step that has one
            assert built.model == profile.model, (scale, name)
        for key, value in profile.steps.get(name, {}).items():  # every value the scale sets, unchanged
            if isinstance(value, dict):  # a nested config (rm: {...}): its other fields keep their defaults
                assert value.items() <= params[key].items(), (scale, name, key)
            else:
                assert params[key] == value, (scale, name, key)
        if name == "grpo" and "vllm_server" in profile.launch:
            assert f"--model {profile.model}" in lines[0]  # the rollout server serves the same policy


def test_full_scale_steps_run_the_full_scale_model_not_the_demo_one(capsys, tmp_path):
    for step in ("generate", "reward", "benchmark", "rm-train", "grpo"):
        params, _ = dry_run(capsys, step, "full", tmp_path)
        assert params["model"] == "Qwen/Qwen3-8B"
    # a -p on the command line wins over the scale's value
    params, _ = dry_run(capsys, "benchmark", "full", tmp_path, "-p", "model=/models/mine")
    assert params["model"] == "/models/mine"


def test_the_planner_sees_exactly_the_values_the_step_will_run(tmp_path, monkeypatch):
    """A scale that leaves fields out gets the plan of the run its step will make: the step config's
    defaults, not the planner's own (group_size and max_completion_length were 8 and 256 there, 4 and 48
    in GRPOStepConfig)."""
    sparse = tmp_path / "sparse.yaml"
    sparse.write_text("model: Qwen/Qwen3-8B\nlaunch: {num_processes: 1}\nsteps: {grpo: {steps: 2}}\n")
    scale = load_scale(str(sparse))
    config = scale.config("grpo")
    assert (config.group_size, config.max_completion_length) == (GRPOStepConfig().group_size,
                                                                 GRPOStepConfig().max_completion_length)
    seen = {}

    def spy(kind, **kwargs):
        seen.update(kwargs)
        return "plan"

    monkeypatch.setattr(promedical.scale.launch, "plan", spy)
    assert plan_for("grpo", config, scale) == "plan"

    assert seen["micro_batch"] == config.group_size * config.prompts_per_step
    assert seen["seq_len"] == PROMPT_TOKENS + config.max_completion_length
    assert (seen["policy"], seen["lora"], seen["lora_r"]) == (config.model, config.lora, config.lora_r)
    assert seen["reward"] == scale.config("rm-train").model and seen["n_gpus"] == 1
    # and a value given on the command line reaches the plan as it reaches the step
    plan_for("grpo", scale.config("grpo", {"group_size": 6, "max_completion_length": 100}), scale)
    assert seen["micro_batch"] == 6 and seen["seq_len"] == PROMPT_TOKENS + 100


def test_a_scale_addresses_each_step_one_way(tmp_path):
    for text, message in (("steps: [{notebook: '04'}]\n", "steps: must map a step name to its parameters"),
                          ("steps: {'04': {steps: 2}}\n", "unknown step '04'"),
                          ("launch_params: {grpo: {steps: 2}}\n", "unknown key(s) launch_params"),
                          ("steps: {grpo: 3}\n", "steps.grpo: must be a mapping")):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            load_scale(str(path))


@pytest.mark.parametrize("name", [name for name, step in STEPS.items() if step.notebook])
def test_notebook_parameters_are_the_step_config_with_its_defaults(name):
    cls, notebook = STEPS[name].config, STEPS[name].notebook
    declared = notebook_parameters(notebook_path(notebook))
    assert declared.pop("workspace") is None
    defaults = cls.defaults()
    assert set(declared) <= set(defaults), set(declared) - set(defaults)
    nested = cls.nested()  # a nested config's mapping (rm = {...}) must build the field's default
    drift = {k: (v, defaults[k]) for k, v in declared.items()
             if (cls.from_dict({k: v}).to_dict()[k] != defaults[k].to_dict() if k in nested
                 else v != defaults[k] or type(v) is not type(defaults[k]))}
    assert not drift, f"notebook {notebook} defaults differ from {cls.__name__}: {drift}"
    source = notebook_path(notebook).read_text(encoding="utf-8")
    assert f"{cls.__name__}.from_namespace(globals())" in source  # the notebook builds the config, not its own dict


@pytest.mark.parametrize("name", [name for name, step in STEPS.items() if step.notebook])
def test_papermill_reads_every_parameter_of_the_parameters_cell(name):
    """papermill's own parser must read each line of the cell (a comment holding '=' or an apostrophe made it
    skip the line, with a warning that a scale's value was an unknown parameter)."""
    import papermill

    path = notebook_path(STEPS[name].notebook)
    assert set(papermill.inspect_notebook(str(path))) == set(notebook_parameters(path))


@pytest.mark.parametrize("scale", SCALES)
def test_every_notebook_step_of_every_scale_builds_its_config(scale):
    profile = load_scale(scale)
    for name, params in profile.steps.items():
        if STEPS[name].notebook:
            check_notebook_params(notebook_path(STEPS[name].notebook), profile.params(name))


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
    with pytest.raises(ValueError, match=r"parameter lam must be >= 1 \+ headroom"):
        GRPOSettings(lam=1.0)  # the veto must outweigh the best clipped score
    for bad in ({"warmup_ratio": 1.0}, {"batch_size": 0}, {"question": "maybe"}):
        with pytest.raises(ValueError, match=f"parameter {next(iter(bad))}:"):
            RMTrainStepConfig(**bad)


def test_shared_pieces_are_defined_once():
    # the reward step's reward model is the rm-train step's fields, nested (no rm_ prefixes)
    assert type(RewardStepConfig().rm) is RMConfig and set(RMConfig.names()) <= set(RMTrainStepConfig.names())
    built = RewardStepConfig.from_dict({"model": "m", "rm": {"lr": 1e-3, "max_steps": 7, "lora_layers": 2},
                                        "seed": 3}).reward_model()
    assert (built.model, built.lr, built.max_steps, built.lora_layers, built.seed) == ("m", 1e-3, 7, 2, 3)
    assert RewardStepConfig.from_dict({"model": "m", "rm.model": "r"}).reward_model().model == "r"
    grpo = GRPOStepConfig(model="p", lr=1e-6, n_monitor_prompts=0)
    assert grpo.settings() == GRPOSettings(model="p", lr=1e-6)  # the step's own fields stay out of the settings
    train = RMTrainStepConfig(max_steps=3, resume=False)
    assert train.project(RMConfig) == RMConfig(max_steps=3)  # rm-train is RMConfig plus its own step fields
    assert all(text for step in STEPS.values() for text in step.config.help().values())  # every field has help


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
    for name, step in STEPS.items():
        assert f"## {name}" in text
        for field, _, help_text in parameter_rows(step.config):  # nested ones too: `rm.max_steps`
            assert f"| `{field}` |" in text and help_text.replace("|", "\\|") in text, (name, field)

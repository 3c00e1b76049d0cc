"""What stage 03's phases share: the generation backends of a run (``LLMs``, each loaded once), the judge's
spec, the gold labels and reference rubrics, the held-out evaluation set, the labels file, and the trained
reward model loaded back from a workspace (what 04 and 05 score with). Light: torch loads inside."""
from __future__ import annotations

import json
from pathlib import Path

from promedical.core.data import load_split
from promedical.core.files import read_jsonl, write_jsonl
from promedical.core.provenance import DATA_DIR
from promedical.core.workspace import Workspace
from promedical.models.llm import LLM
from promedical.reward.config import RewardStepConfig, RMConfig
from promedical.reward.labels import Labels
from promedical.rubrics.selection import match_prompt_ids, workspace_split


class LLMs:
    """The generation backends of a stage-03 run, each loaded on first use and shared by its phases (a
    judge that is also the policy is loaded once). ``llms(spec)``: a model spec or a source mapping."""

    def __init__(self, workspace=None):
        self.ws = Workspace.of(workspace)
        self.loaded: dict[str, LLM] = {}

    def __call__(self, spec) -> LLM:
        from promedical.models.sources import llm_for

        key = json.dumps(spec, sort_keys=True)
        if key not in self.loaded:
            self.loaded[key] = llm_for(spec, self.ws.llm_cache)
        return self.loaded[key]

    def release(self) -> None:
        """Drop the loaded models (their memory, before the reward model trains); they load again on next use."""
        self.loaded.clear()


def judge_spec(config: RewardStepConfig):
    """The judge's model spec or source mapping (null judge_model: the step's model)."""
    return config.judge_model or config.model


# ---------------------------------------------------------------- inputs the phases share
def gold_labels_path(config: RewardStepConfig) -> Path:
    path = Path(config.gold_labels) if config.gold_labels else DATA_DIR / "train" / "candidates.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"gold_labels: no file at {path}")
    return path


def reference_rubrics(workspace, rubrics) -> list:
    """The reference rubrics of these training instructions: the ones gold labels were written for (not a
    reviewed revision of them)."""
    wanted = {r.id for r in rubrics}
    return [r for r in workspace_split(workspace, "train") if r.id in wanted and r.criteria]


def evaluation_set(workspace, eval_labels: str | None = None, n_prompts: int | None = None):
    """(bench rubrics, gold-labelled candidates of the first ``n_prompts`` prompts in file order, description):
    the workspace's bench rubrics with the candidates of ``eval_labels`` (default: the kit's), matched by id or
    lineage; when none match (a corpus whose bench has no gold labels yet), the kit's bench and its gold."""
    from promedical.core.data import load_candidates

    path = Path(eval_labels) if eval_labels else DATA_DIR / "bench" / "candidates.jsonl"
    bench = [r for r in workspace_split(workspace, "bench") if r.criteria]
    gold = match_prompt_ids(bench, read_jsonl(path))
    source = f"workspace bench, labels {path}"
    if not gold:
        if eval_labels:
            raise ValueError(f"eval_labels {path}: none of its prompt ids is a rubric of the workspace's bench")
        bench, gold, source = load_split("bench"), load_candidates(), "the kit's bench (data/bench): the workspace " \
                                                                      "bench has no gold-labelled candidates"
    keep = set(list(dict.fromkeys(g["prompt_id"] for g in gold))[:n_prompts])  # the first n prompts, in file order
    gold = [g for g in gold if g["prompt_id"] in keep]
    return bench, gold, {"source": source, "prompts": len(keep), "candidates": len(gold)}


def read_labels(path: str | Path) -> Labels:
    """reward/labels.jsonl -> {(prompt_id, response_id): {criterion_id: met or None}}."""
    return {(row["prompt_id"], row["response_id"]): row["criteria_met"] for row in read_jsonl(path)}


def write_labels(ws: Workspace, labels: Labels) -> None:
    write_jsonl(ws.reward_labels, [{"prompt_id": p, "response_id": r, "criteria_met": met}
                                   for (p, r), met in labels.items()])


# ---------------------------------------------------------------- the trained model, and training alone
def load_reward_model(workspace=None, adapter: str | Path | None = None):
    """The reward model trained by 03 (or any adapter directory holding an rm_config.json), frozen."""
    from promedical.reward.scorer import CriteriaRewardModel

    adapter = Path(adapter) if adapter else Workspace.of(workspace).reward_adapter
    config_file = adapter / "rm_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no reward-model adapter at {adapter} (missing rm_config.json): "
                                "run notebook 03 first, or pass the adapter directory")
    rm = CriteriaRewardModel.load(RMConfig(**json.loads(config_file.read_text(encoding="utf-8"))), adapter=adapter)
    return rm.freeze()

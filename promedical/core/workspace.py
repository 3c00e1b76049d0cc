"""The workspace: one folder per run, the only source of a step's inputs and the home of its artefacts.

``Workspace.of(x)`` resolves a workspace once — a ``Workspace``, a path, or ``None`` for
``$PROMEDICAL_WORKSPACE`` or else ``runs/demo`` under the kit's root — to an absolute folder; the CLI,
the notebooks and the library all go through it. Every path inside a workspace is named here and
nowhere else: a stage asks ``ws.reward_metrics``, never spells ``"reward" / "metrics.json"``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from promedical.core.provenance import KIT_ROOT

DEFAULT_WORKSPACE = KIT_ROOT / "runs" / "demo"
ENV_VAR = "PROMEDICAL_WORKSPACE"


def default_workspace() -> Path:
    """``$PROMEDICAL_WORKSPACE``, else ``runs/demo`` under the kit's root."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_WORKSPACE)


@dataclass(frozen=True)
class Workspace:
    """Paths of one run's folder. Built with ``Workspace.of``; the folder is created on first use."""

    root: Path

    @classmethod
    def of(cls, workspace: "Workspace | str | Path | None" = None) -> "Workspace":
        if isinstance(workspace, Workspace):
            return workspace
        root = cls.folder(workspace)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @staticmethod
    def folder(workspace: "Workspace | str | Path | None" = None) -> Path:
        """The absolute folder ``Workspace.of`` would use, without creating it (e.g. to check it first)."""
        if isinstance(workspace, Workspace):
            return workspace.root
        if workspace is not None and not isinstance(workspace, (str, os.PathLike)):
            raise TypeError(f"workspace: a path or a Workspace, got {type(workspace).__name__}")
        if workspace is not None and not str(workspace).strip():
            raise ValueError("workspace: must not be empty")
        root = Path(workspace) if workspace is not None else default_workspace()
        return root.expanduser().resolve()

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    # ---------------------------------------------------------------- stage folders
    @property
    def data(self) -> Path:
        """00: the curated corpus (``promedical.corpus.store`` names the tables inside)."""
        return self.root / "data"

    @property
    def rubrics(self) -> Path:
        """01 and 02: the revision store, drafts, reviewed rubrics, team review."""
        return self.root / "rubrics"

    @property
    def reward(self) -> Path:
        """03: candidates, judgments, labels, pairs, the reward model and its evaluation."""
        return self.root / "reward"

    @property
    def policy(self) -> Path:
        """04: the GRPO policy adapter, curves, monitor."""
        return self.root / "policy"

    @property
    def benchmark(self) -> Path:
        """05: answers, grades, comparison, report."""
        return self.root / "benchmark"

    @property
    def llm_cache(self) -> Path:
        """Cached LLM replies (``models.llm.CachedLLM``), shared by every stage."""
        return self.root / "cache" / "llm"

    @property
    def notebooks(self) -> Path:
        """Executed notebooks of ``promedical demo`` / ``promedical notebook``."""
        return self.root / "notebooks"

    @property
    def phases(self) -> Path:
        """One record per finished phase: the key of its inputs and config (``core.phases``)."""
        return self.root / "phases"

    @property
    def summary(self) -> Path:
        """The demo's headline numbers."""
        return self.root / "summary.json"

    # ---------------------------------------------------------------- artefacts read by a later stage
    @property
    def generated_rubrics(self) -> Path:
        return self.rubrics / "generated.jsonl"

    @property
    def generation_summary(self) -> Path:
        return self.rubrics / "generation_summary.json"

    @property
    def reviewed_rubrics(self) -> Path:
        return self.rubrics / "reviewed.jsonl"

    @property
    def review_summary(self) -> Path:
        return self.rubrics / "review_summary.json"

    @property
    def applied_reviews(self) -> Path:
        """02: what applying the batch reviews file did (kept so a re-run does not apply it twice)."""
        return self.rubrics / "applied_reviews.json"

    @property
    def team_file(self) -> Path:
        """02b: every round, assignment, review and adjudication (``TeamStore.export``)."""
        return self.rubrics / "team.json"

    @property
    def team_rounds_chart(self) -> Path:
        return self.rubrics / "rounds.html"

    @property
    def team_review_summary(self) -> Path:
        return self.rubrics / "team_review_summary.json"

    @property
    def reward_candidates(self) -> Path:
        return self.reward / "candidates.jsonl"

    @property
    def reward_judgments(self) -> Path:
        return self.reward / "judgments.jsonl"

    @property
    def reward_judge_check(self) -> Path:
        return self.reward / "judge_check.json"

    @property
    def reward_labels(self) -> Path:
        """03: the per-criterion labels the pairs are built from, one row per candidate (editable)."""
        return self.reward / "labels.jsonl"

    @property
    def reward_evaluation(self) -> Path:
        """03: base vs trained reward model on the held-out gold candidates."""
        return self.reward / "evaluation.json"

    @property
    def reward_dataset(self) -> Path:
        return self.reward / "dataset"

    @property
    def reward_adapter(self) -> Path:
        return self.reward / "adapter"

    @property
    def reward_ablation(self) -> Path:
        """03: the ablation without explicit criteria (RMConfig.criteria="none"): its adapter/, train_log.json, runs/."""
        return self.reward / "ablation"

    @property
    def reward_ablation_adapter(self) -> Path:
        return self.reward_ablation / "adapter"

    @property
    def reward_ablation_train_log(self) -> Path:
        return self.reward_ablation / "train_log.json"

    @property
    def reward_metrics(self) -> Path:
        return self.reward / "metrics.json"

    @property
    def reward_train_log(self) -> Path:
        return self.reward / "train_log.json"

    @property
    def policy_adapter(self) -> Path:
        return self.policy / "adapter"

    @property
    def policy_summary(self) -> Path:
        return self.policy / "summary.json"

    @property
    def policy_log(self) -> Path:
        return self.policy / "log.json"

    @property
    def policy_curves(self) -> Path:
        return self.policy / "curves.html"

    @property
    def policy_monitor(self) -> Path:
        return self.policy / "monitor.html"

    @property
    def bench_answers(self) -> Path:
        return self.benchmark / "answers.jsonl"

    @property
    def bench_graded(self) -> Path:
        return self.benchmark / "graded.jsonl"

    @property
    def bench_judge_grades(self) -> Path:
        """The LLM judge's rows alone (kept apart so that re-grading reuses them)."""
        return self.benchmark / "judge_graded.jsonl"

    @property
    def bench_comparison(self) -> Path:
        """Per-grader statistics, grader agreement and the headline (``bench.step.compare``)."""
        return self.benchmark / "comparison.json"

    @property
    def bench_report(self) -> Path:
        return self.benchmark / "report.html"

    @property
    def bench_result(self) -> Path:
        return self.benchmark / "benchmark.json"

    @property
    def bench_audit(self) -> Path:
        return self.benchmark / "audit.json"

    @property
    def bench_probes(self) -> Path:
        return self.benchmark / "probes.json"

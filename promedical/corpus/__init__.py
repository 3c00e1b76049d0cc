"""Step 00: a user's corpus in. Ingest (sources, shapes, lineage, bad rows), curate (exact, MinHash and
semantic dedup; LLM difficulty and category labels), split (stratified, decontaminated) and the funnel.

Public entry points: ``step_data`` (the step, as notebook 00 and the CLI run it) and
``read_instructions`` (the workspace's train/bench instructions, for every later step).
"""
from promedical.corpus.config import DataConfig
from promedical.corpus.store import instruction_rubrics, read_instructions

__all__ = ["DataConfig", "read_instructions", "instruction_rubrics", "step_data"]


def step_data(workspace=None, **params) -> dict:
    """00: ingest ``sources`` (if any) into the workspace, then curate and split. Returns the funnel summary."""
    from promedical.corpus.step import step_data as _run

    return _run(workspace, **params)

"""Stage 01 as phases: pick instructions, build the few-shot pool, draft rubrics, add them to the store.

Each phase takes and returns values, so a notebook can look at what one made and change it before
the next (drop an instruction, drop an example from the pool, edit a draft's criterion)::

    items = pick_instructions(ws, config)           # the training instructions to draft for
    pool = few_shot_pool(ws)                         # reviewed and reference rubrics shown as examples
    drafts, summary = draft_rubrics(ws, config, items, pool)   # -> rubrics/generated.jsonl
    counts = add_to_store(ws, config, drafts)        # new ids join the revision store as drafts

Drafting is the costly phase: it resumes by id (finished items are never drafted twice) and, when
neither the instructions, the pool nor the config fields it reads changed since the last run, it
says so and reuses ``generated.jsonl`` without loading the model.
"""
from __future__ import annotations

import json
import random

from promedical.core.config import build
from promedical.core.data import load_split
from promedical.core.files import write_json
from promedical.core.phases import Phase
from promedical.core.provenance import stamp
from promedical.core.rubric import Rubric
from promedical.core.workspace import Workspace
from promedical.models.llm import GenParams, make_llm
from promedical.rubrics.config import GenerateStepConfig
from promedical.rubrics.generate import FewShotPool, generate_rubrics, latest_records, summarize
from promedical.rubrics.selection import workspace_split
from promedical.rubrics.store import open_store

DRAFT_FIELDS = ("model", "backend", "base_url", "seed", "constrained", "few_shot_k", "max_new_tokens")
"""The config fields a draft depends on (``n_instructions`` acts through the items, ``progress`` not at all)."""


def pick_instructions(workspace, config: GenerateStepConfig) -> list[Rubric]:
    """``n_instructions`` training instructions of the workspace, shuffled with ``seed`` (each a rubric
    that carries the instruction, with its reference criteria where its source had some)."""
    items = list(workspace_split(workspace, "train"))
    random.Random(config.seed).shuffle(items)
    return items[:config.n_instructions]


def few_shot_pool(workspace) -> FewShotPool:
    """The examples a draft may be shown: clinician-approved rubrics first (they supersede a reference
    of the same id), then the references that came with the workspace's instructions, then the kit's
    own reference rubrics. ``pool.examples_for(item, k)`` says which ones an instruction gets."""
    pool = FewShotPool(open_store(workspace).rubrics(status="approved"))
    pool.add([r for r in workspace_split(workspace, "train") if r.criteria])
    pool.add(load_split("train"))
    return pool


def draft_rubrics(workspace, config: GenerateStepConfig, items: list[Rubric], pool: FewShotPool, *,
                  force: bool = False) -> tuple[list[Rubric], dict]:
    """Draft a rubric for each item with the configured writer; returns the drafts that parsed (in
    the items' order) and the summary of ``generated.jsonl`` (also ``generation_summary.json``).

    Results are appended to ``generated.jsonl`` as they come, and an item already there is not drafted
    again. With the same items, pool and drafting fields as the last run (and no backend error left to
    retry) the phase says so and reads the file back instead (``force=True`` drafts what is missing anyway).
    """
    ws = Workspace.of(workspace)
    phase = Phase(ws, "rubrics.draft", inputs=(items, pool.rubrics),
                  config={f: getattr(config, f) for f in DRAFT_FIELDS}, force=force)
    reused = phase.reusable()
    if reused:
        summary = json.loads(ws.generation_summary.read_text(encoding="utf-8"))
    else:
        llm = make_llm(config.backend, config.model, base_url=config.base_url, cache_dir=ws.llm_cache)
        gen = GenParams(max_new_tokens=config.max_new_tokens, seed=config.seed, repetition_penalty=1.1)
        generate_rubrics(items, llm, ws.generated_rubrics, pool=pool, k=config.few_shot_k,
                         constrained=config.constrained, params=gen, progress=config.progress)
        summary = {**summarize(ws.generated_rubrics), "results": str(ws.generated_rubrics),
                   "provenance": stamp(config=config.to_dict(), seed=config.seed)}
        write_json(ws.generation_summary, summary)
    records = {r["id"]: r for r in latest_records(ws.generated_rubrics)}
    if not reused and not any(records.get(it.id, {}).get("retryable") for it in items):
        phase.done(ws.generated_rubrics, ws.generation_summary)  # an item a backend error failed is asked again
    drafts = [Rubric.from_dict(records[it.id]["rubric"]) for it in items if (records.get(it.id) or {}).get("rubric")]
    return drafts, summary


def add_to_store(workspace, config: GenerateStepConfig, drafts: list[Rubric]) -> dict:
    """Add the drafts the revision store does not hold yet, as drafts by ``generator:<model>``; returns
    how many were added, how many it held already, and the store's rubrics per status."""
    store = open_store(workspace)
    added = store.import_rubrics(drafts, author=f"generator:{config.model}", reason="LLM draft")
    return {"added": added, "already_in_store": len({r.id for r in drafts}) - added,
            "store": store.status_counts()}


def step_generate(workspace=None, config: GenerateStepConfig | None = None, **params) -> dict:
    """01: draft rubrics for n training instructions and add them to the store as drafts
    (``config`` and/or ``params``: GenerateStepConfig). Returns the generation summary with
    ``added_to_store``."""
    c = build(GenerateStepConfig, config, params)
    ws = Workspace.of(workspace)
    items = pick_instructions(ws, c)
    drafts, summary = draft_rubrics(ws, c, items, few_shot_pool(ws))
    return {**summary, "added_to_store": add_to_store(ws, c, drafts)["added"]}

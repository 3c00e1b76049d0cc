"""Stage 01 as phases: pick instructions, build the few-shot pool, draft rubrics, add them to the store."""
from __future__ import annotations

import random

from promedical.core.config import build
from promedical.core.data import load_split
from promedical.core.files import write_json
from promedical.core.provenance import stamp
from promedical.core.workspace import Workspace
from promedical.models.llm import GenParams, make_llm
from promedical.rubrics.config import GenerateStepConfig
from promedical.rubrics.generate import FewShotPool, generate_rubrics, load_generated
from promedical.rubrics.selection import workspace_split
from promedical.rubrics.store import open_store


def step_generate(workspace=None, config: GenerateStepConfig | None = None, **params) -> dict:
    """01: draft rubrics for n training instructions and add them to the store as drafts
    (``config`` and/or ``params``: GenerateStepConfig)."""
    c = build(GenerateStepConfig, config, params)
    ws = Workspace.of(workspace)
    store = open_store(ws)
    instructions = workspace_split(ws, "train")
    items = list(instructions)
    random.Random(c.seed).shuffle(items)
    items = items[:c.n_instructions]
    # few-shot pool: reviewed rubrics first (they supersede a reference of the same id), then the
    # references that came with the workspace's instructions, then the kit's own reference rubrics
    pool = FewShotPool(store.rubrics(status="approved"))
    pool.add([r for r in instructions if r.criteria])
    pool.add(load_split("train"))
    llm = make_llm(c.backend, c.model, base_url=c.base_url, cache_dir=ws / "cache" / "llm")
    out = ws / "rubrics" / "generated.jsonl"
    gen = GenParams(max_new_tokens=c.max_new_tokens, seed=c.seed, repetition_penalty=1.1)
    summary = generate_rubrics(items, llm, out, pool=pool, k=c.few_shot_k, constrained=c.constrained,
                               params=gen, progress=c.progress)
    added = store.import_rubrics(load_generated(out), author=f"generator:{c.model}", reason="LLM draft")
    summary.update(added_to_store=added, results=str(out), provenance=stamp(config=c.to_dict(), seed=c.seed))
    write_json(ws / "rubrics" / "generation_summary.json", summary)
    return summary

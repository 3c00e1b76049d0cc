"""Step 00: a user's corpus in. Ingest (sources, shapes, lineage, bad rows), curate (exact, MinHash and
semantic dedup; LLM difficulty and category labels), split (stratified, decontaminated) and the funnel.

The step is ``promedical.corpus.step.step_data`` (notebook 00, ``promedical step data``); every later step
reads the workspace's instructions with ``promedical.corpus.store.read_instructions``.
"""

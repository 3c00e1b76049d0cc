"""Stage 01: LLM-written instruction-specific rubrics and the append-only revision store that every later
stage reads them from (notebook 01)."""

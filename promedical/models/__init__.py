"""Models and generation backends shared by every stage: resolving and loading a model (embedded, hub id,
local path, tiny Qwen3), the LLM backends (transformers, vLLM, OpenAI-compatible) and source specs."""

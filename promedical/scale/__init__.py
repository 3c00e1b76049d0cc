"""Stage 06: the same steps at full scale — scale profiles (configs/*.yaml), the memory planner and
`promedical launch` (accelerate + DeepSpeed/FSDP, vLLM server)."""

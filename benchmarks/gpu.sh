#!/usr/bin/env bash
# Device check for a GPU machine (PREPARED, NOT YET RUN: no GPU was lent to the task that wrote it).
# Reward-model criteria/s packed vs one sequence per criterion, Unsloth vs PEFT training, and a GRPO step
# split, on randomly initialised Qwen3 models of the 0.6B and 8B architecture (no weights can be
# downloaded on the device machine), with peak CUDA memory. Results go to $OUT (or ./gpu-results).
#   bash benchmarks/gpu.sh [0.6b|8b|all|ablation]
# `ablation` (needs real weights: RM_MODEL=/path/to/Qwen3-0.6B or a hub id where the hub can be reached) is the
# run that settles issue 24 past the 135M backbone: the criterion model vs its no-criteria ablation, 3 seeds,
# the safety-first selection on 8 validation prompts, 15 held-out benchmark prompts (benchmarks/rm_heldout.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
WHICH="${1:-all}"
MODELS="${MODELS_DIR:-/tmp/promedical-random-qwen3}"
mkdir -p "$OUT" "$MODELS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"

# Qwen3-0.6B and Qwen3-8B architectures (their config.json values), random weights in bf16, with the
# embedded tokenizer (ids fit the 151 936-token vocabulary).
python - "$MODELS" "$WHICH" <<'PY'
import sys, torch
from pathlib import Path
from transformers import Qwen3Config, Qwen3ForCausalLM
from promedical.models.loading import load_tokenizer
root, which = Path(sys.argv[1]), sys.argv[2]
archs = {"0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                      num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
         "8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)}
for name, arch in archs.items():
    if which not in ("all", name) or (root / name / "config.json").exists():
        continue
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(Qwen3Config(vocab_size=151936, max_position_embeddings=40960, **arch)).to(torch.bfloat16)
    model.save_pretrained(root / name)
    load_tokenizer("embedded").save_pretrained(root / name)
    print(name, sum(p.numel() for p in model.parameters()) / 1e9, "B parameters")
    del model
    torch.cuda.empty_cache()
PY

for name in 0.6b 8b; do
  [ "$WHICH" = all ] || [ "$WHICH" = "$name" ] || continue
  m="$MODELS/$name"
  echo "== $name: packed vs one sequence per criterion; Unsloth vs PEFT" | tee -a "$OUT/summary.txt"
  timeout 900 python benchmarks/rm_training.py --model "$m" --criteria 7 --responses 8 --repeats 3 --steps 4 \
    --batch-size 2 2>&1 | tee "$OUT/rm_training_$name.txt" | grep -E "packed|unsloth/peft|^\|" | tee -a "$OUT/summary.txt"
  echo "== $name: GRPO step split" | tee -a "$OUT/summary.txt"
  timeout 900 python benchmarks/grpo_step.py --model "$m" --steps 2 --group-size 8 --length 256 2>&1 \
    | tee "$OUT/grpo_step_$name.txt" | grep -E "seconds/step|reward share" | tee -a "$OUT/summary.txt"
done

if [ "$WHICH" = ablation ]; then
  : "${RM_MODEL:?give RM_MODEL=/path/to/Qwen3-0.6B (real weights: a random model settles nothing)}"
  echo "== $RM_MODEL: criterion model vs the no-criteria ablation, 3 seeds" | tee -a "$OUT/summary.txt"
  timeout 3600 python benchmarks/rm_heldout.py --model "$RM_MODEL" --train-source train --eval-prompts 15 \
    --lora-layers 8 --lr 5e-4 --bce-balance tier --eval-at 30,60 --seeds 0,1,2 --with-ablation --val-prompts 8 \
    --json "$OUT/rm_ablation.json" 2>&1 | tee "$OUT/rm_ablation.txt" | grep -E "^\||^step|selection" | tee -a "$OUT/summary.txt"
fi

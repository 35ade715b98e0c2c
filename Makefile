# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Both create .venv and install the package (torch 2.13.0 CPU first, so pip never pulls a
# multi-GB CUDA build), then run.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RLIV := $(VENV)/bin/rliv
STAMP := $(VENV)/.installed
DEMO := demo_out
DEMO_TRACKING := sqlite:///$(abspath $(DEMO))/mlflow.db

.PHONY: demo test install lint bench-generate bench-samples clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job end to end on the embedded synthetic world, tracked in a local MLflow store.
demo: $(STAMP)
	mkdir -p $(DEMO)
	$(RLIV) generate $(DEMO)/world --users 1000 --seed 0 --overwrite
	$(RLIV) validate $(DEMO)/world
	$(RLIV) summary $(DEMO)/world --tracking-uri $(DEMO_TRACKING)
	$(RLIV) check-world --users 300 --days 7 --seeds 3
	$(RLIV) build-samples $(DEMO)/world $(DEMO)/samples --workers 2 --asa-epochs 5 --overwrite --tracking-uri $(DEMO_TRACKING)
	$(RLIV) train rliv-ua $(DEMO)/samples --out $(DEMO)/rliv_ua --iterations 4 --updates-per-iteration 50 --checkpoint-every 2 --overwrite --tracking-uri $(DEMO_TRACKING)
	$(RLIV) rerank $(DEMO)/rliv_ua/scorer.pt $(DEMO)/samples --top-k 10
	$(RLIV) generate-live $(DEMO)/live --users 2000 --days 2 --seed 0 --overwrite
	$(RLIV) build-live-samples $(DEMO)/live $(DEMO)/live_samples --overwrite
	$(RLIV) train sl-mgac $(DEMO)/live_samples --out $(DEMO)/sl_mgac --iterations 3 --updates-per-iteration 20 --checkpoint-every 3 --overwrite --tracking-uri $(DEMO_TRACKING)
	$(RLIV) evaluate-ope $(DEMO)/live_samples $(DEMO)/sl_mgac --seeds 2 --out $(DEMO)/ope --tracking-uri $(DEMO_TRACKING)
	@echo "MLflow store: $(DEMO_TRACKING)  (browse: $(VENV)/bin/mlflow ui --backend-store-uri $(DEMO_TRACKING))"

# The whole suite: unit, ray and slow tiers.
test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check rliv_ray tests benchmarks

bench-generate: $(STAMP)
	$(PY) benchmarks/generate_memory.py --rows 10000000

bench-samples: $(STAMP)
	$(PY) benchmarks/sample_pipeline.py --rows 1000000 4000000 10000000

clean:
	rm -rf $(DEMO) .pytest_cache

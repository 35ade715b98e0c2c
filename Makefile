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

.PHONY: demo test install chromium obd mlflow-ui lint bench-generate bench-samples bench-learners bench-peer clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the MLflow UI test (tests/integration/test_mlflow_ui.py); a no-op where
# it is installed. Debian, as root: apt-get; elsewhere install chromium yourself.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } || \
		{ echo "make chromium: could not install Chromium; install it (e.g. apt-get install chromium) and rerun" >&2; exit 1; }

# The Open Bandit Dataset sample for the OBD check (tests/unit/test_obd.py,
# benchmarks/obd_bts.py): obp 0.4.1's wheel from PyPI, its SHA-256 checked; only the OBD CSVs,
# the BTS prior and obp's licence are extracted, into .cache/obd (gitignored). obp itself is
# never installed. A no-op once extracted.
OBD_CACHE := .cache/obd
OBD_WHEEL := $(OBD_CACHE)/obp-0.4.1-py3-none-any.whl
OBD_DIR := $(OBD_CACHE)/obp-0.4.1
$(OBD_DIR)/SOURCE.txt: rliv_ray/data/obd.py | $(STAMP)
	test -f $(OBD_WHEEL) || $(PY) -m pip download --quiet --disable-pip-version-check \
		--no-deps --only-binary=:all: --dest $(OBD_CACHE) obp==0.4.1
	$(PY) -m rliv_ray.data.obd extract $(OBD_WHEEL) $(OBD_DIR)

obd: $(OBD_DIR)/SOURCE.txt

# The main job end to end on the embedded synthetic world, tracked in a local MLflow store.
demo: $(STAMP)
	mkdir -p $(DEMO)
	$(RLIV) generate $(DEMO)/world --users 1000 --seed 0 --overwrite
	$(RLIV) validate $(DEMO)/world
	$(RLIV) summary $(DEMO)/world --tracking-uri $(DEMO_TRACKING)
	$(RLIV) check-world --users 300 --days 7 --seeds 5
	$(RLIV) build-samples $(DEMO)/world $(DEMO)/samples --asa-epochs 5 --overwrite --tracking-uri $(DEMO_TRACKING)
	$(RLIV) train rliv-ua $(DEMO)/samples --out $(DEMO)/rliv_ua --iterations 4 --updates-per-iteration 50 --checkpoint-every 2 --overwrite --tracking-uri $(DEMO_TRACKING)
	$(RLIV) rerank $(DEMO)/rliv_ua/scorer.pt $(DEMO)/samples --top-k 10
	$(RLIV) train rliv-ua $(DEMO)/samples --ablation dqn --out $(DEMO)/dqn --iterations 4 --updates-per-iteration 50 --checkpoint-every 4 --overwrite --quiet --tracking-uri $(DEMO_TRACKING)
	$(RLIV) evaluate $(DEMO)/world --users 100 --seeds 3 --policy RankingModel --policy DQN=rliv:$(DEMO)/dqn --policy RLIV-UA=rliv:$(DEMO)/rliv_ua --out $(DEMO)/table1 --quiet --tracking-uri $(DEMO_TRACKING)
	$(RLIV) fit-simulator $(DEMO)/world --out $(DEMO)/simulator --overwrite
	$(RLIV) evaluate $(DEMO)/simulator --users 100 --seeds 2 --policy RankingModel --policy DQN=rliv:$(DEMO)/dqn --policy RLIV-UA=rliv:$(DEMO)/rliv_ua --out $(DEMO)/table1_simulator --quiet --tracking-uri $(DEMO_TRACKING)
	$(RLIV) generate-live $(DEMO)/live --users 2000 --days 2 --seed 0 --overwrite
	$(RLIV) build-live-samples $(DEMO)/live $(DEMO)/live_samples --overwrite
	$(RLIV) train sl-mgac $(DEMO)/live_samples --out $(DEMO)/sl_mgac --iterations 3 --updates-per-iteration 20 --checkpoint-every 3 --overwrite --tracking-uri $(DEMO_TRACKING)
	$(RLIV) evaluate-ope $(DEMO)/live_samples $(DEMO)/sl_mgac --seeds 2 --out $(DEMO)/ope --tracking-uri $(DEMO_TRACKING)
	@echo "MLflow store: $(DEMO_TRACKING)  (browse: make mlflow-ui)"

# The demo's runs in the MLflow UI on 127.0.0.1:5000 (PORT=...); Ctrl-C stops it.
PORT ?= 5000
mlflow-ui: $(STAMP)
	$(RLIV) ui --tracking-uri $(DEMO_TRACKING) --port $(PORT)

# The whole suite: unit, ray and slow tiers.
test: $(STAMP) chromium obd
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check rliv_ray tests benchmarks

bench-generate: $(STAMP)
	$(PY) benchmarks/generate_memory.py --rows 10000000

bench-samples: $(STAMP)
	$(PY) benchmarks/sample_pipeline.py --rows 1000000 4000000 10000000

# Learner speed (issue 14): RLIV-UA's optimisers and SL-MGAC's update, bare torch, interleaved.
BENCH_DATA ?= /tmp/rliv-bench
bench-learners: $(STAMP)
	$(RLIV) generate $(BENCH_DATA)/world --users 1000 --seed 0 --overwrite --quiet
	$(RLIV) build-samples $(BENCH_DATA)/world $(BENCH_DATA)/samples --asa-epochs 5 --overwrite --quiet
	$(PY) benchmarks/rliv_ua_updates.py $(BENCH_DATA)/samples --variants before dense after --profile 10
	$(PY) benchmarks/sl_mgac_updates.py

# The peer benchmark against d3rlpy, which lives only in its own environment (.venv-peer).
PEER_VENV := .venv-peer
$(PEER_VENV)/.installed:
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PEER_VENV)/bin/pip install --quiet --disable-pip-version-check d3rlpy==2.8.1 pyarrow
	touch $@

bench-peer: $(STAMP) $(PEER_VENV)/.installed
	$(RLIV) generate $(BENCH_DATA)/world --users 1000 --seed 0 --overwrite --quiet
	$(RLIV) build-samples $(BENCH_DATA)/world $(BENCH_DATA)/samples --asa-epochs 5 --overwrite --quiet
	$(PY) benchmarks/peer_d3rlpy.py $(BENCH_DATA)/samples --iterations 30 --markdown $(BENCH_DATA)/peer_d3rlpy.md

clean:
	rm -rf $(DEMO) .pytest_cache

# Everything the project needs is installed by `make setup` into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests start `python -m orchestrator` hundreds of times: with bytecode caching off (some machines
# set this) each start compiles the project again (1.1 s against 0.6 s per start measured here),
# and pytest re-rewrites every test module's asserts at each run.
unexport PYTHONDONTWRITEBYTECODE
# Debian tools the tests use (docker-compose validates the compose file; headless chromium opens
# report.html; prometheus and its promtool load and unit-test deploy/monitoring); needs root.
APT_INSTALL := $(if $(filter 0,$(shell id -u)),,sudo -n) sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$$@" >/dev/null' apt

.PHONY: setup check test demo bench lint clean gpu-wheels reference

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[models,server,test,workflows,simulation,docs]"
	command -v docker-compose >/dev/null || $(APT_INSTALL) docker-compose \
		|| echo "setup: warning: no docker-compose (Debian package); its test will skip"
	command -v chromium >/dev/null || $(APT_INSTALL) chromium \
		|| echo "setup: warning: no chromium (Debian package); the report browser test will skip"
	command -v promtool >/dev/null || $(APT_INSTALL) prometheus \
		|| echo "setup: warning: no prometheus (Debian package); the monitoring tests will skip"
	touch $(STAMP)

# The tests that start no process (no server, no tool, no browser; tests/conftest.py enforces it):
# the quick loop while working.
QUICK_TESTS := not (server or slow or browser or workflow or gpu)
# make test's pytest workers: each has its own servers on free ports and takes whole test files.
# Most server tests wait on sleeping toy models, so a 2-core machine gains from more workers than
# cores (docs/testing.md has the figures).
TEST_WORKERS ?= 4

check: setup
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports pyproject.toml
	$(BIN)/python -m pytest -q -m "$(QUICK_TESTS)"

test: setup
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports pyproject.toml
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: setup
	$(BIN)/python -m orchestrator demo

bench: setup
	$(BIN)/python bench/run.py

# Wheels for bench/gpu_run.sh on a GPU machine with Python 3.12, CUDA torch and no network.
GPU_WHEELS ?= bench/wheels
gpu-wheels: setup
	$(BIN)/python -m pip download -q --only-binary=:all: --no-deps -d $(GPU_WHEELS) \
		--python-version 3.12 --implementation cp --platform manylinux_2_35_x86_64 \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 \
		nvidia-pytriton==0.7.0 "tritonclient[grpc]" grpcio protobuf python-rapidjson ml-dtypes \
		packaging fair-esm==2.0.0 tokenizers "numpy<2"
	du -sh $(GPU_WHEELS)

# docs/cli.md from the commands' parsers: run after changing an option or its help text.
reference: setup
	$(BIN)/python -m mkdocs_hooks.cli_reference --write

lint: setup
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports pyproject.toml

clean:
	rm -rf $(VENV) build site *.egg-info

# Everything the project needs is installed by `make setup` into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian tools the deployment tests use (docker-compose validates the compose file); needs root.
APT_INSTALL := $(if $(filter 0,$(shell id -u)),,sudo -n) sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$$@" >/dev/null' apt

.PHONY: setup test demo bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[models,server,test,workflows]"
	command -v docker-compose >/dev/null || $(APT_INSTALL) docker-compose \
		|| echo "setup: warning: no docker-compose (Debian package); its test will skip"
	touch $(STAMP)

test: setup
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/python -m orchestrator demo

bench: setup
	$(BIN)/python bench/run.py

lint: setup
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info

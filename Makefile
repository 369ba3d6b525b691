# The test command is `make test`: it installs and starts what it needs (Docker engine, base
# images, the pinned Python toolchain, fixtures), then runs lint, unit tests and molecule.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-dev.sha256
SCENARIOS ?= default gpu_facts fleet debian13

.PHONY: provision controller test deps engine base-images fixtures test-bundle test-tools lint unit molecule syntax clean-cache

test: deps engine base-images fixtures lint unit syntax molecule

# Provision this machine (the default inventory): the pinned Ansible, then `ansible-playbook site.yml`.
provision: controller
	$(BIN)/ansible-playbook site.yml

controller:
	@python3 -c 'import ensurepip, venv' 2>/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq python3-venv; }
	@[ -x $(BIN)/ansible-playbook ] || \
	  { python3 -m venv $(VENV) && $(BIN)/pip install -q --disable-pip-version-check -r requirements.txt; }

deps:
	@want=$$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$want" ]; then \
	  python3 -m venv $(VENV) && \
	  $(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt && \
	  echo "$$want" > $(STAMP); \
	fi

engine:
	scripts/ensure-docker.sh

base-images: engine
	scripts/build-base-images.sh

fixtures: deps
	scripts/make-fixtures.sh

# The air-gapped test bundle the debian13 scenario provisions from: made with the real bundle
# playbook, from the fixtures and the test base images (a rerun only checks and re-indexes).
test-bundle: deps base-images fixtures
	MOLECULE_PROJECT_DIRECTORY=$(CURDIR) $(BIN)/ansible-playbook playbooks/bundle.yml \
	  -e localai_bundle=$(CURDIR)/.cache/bundle \
	  -e @molecule/shared/vars/airgap-test.yml -e @molecule/debian13/vars/bundle-inputs.yml

# Debian's Prometheus: molecule's metrics test scrapes the stack with a real one.
test-tools:
	@command -v prometheus >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint -s .
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/ansible-lint

unit: deps
	$(BIN)/pytest

syntax: deps
	$(BIN)/ansible-playbook site.yml --syntax-check

molecule: deps engine base-images fixtures test-bundle test-tools
	for s in $(SCENARIOS); do \
	  PATH=$(abspath $(BIN)):$$PATH $(BIN)/molecule test -s $$s; \
	done

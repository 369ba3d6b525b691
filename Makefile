# The test command is `make test`: it installs and starts what it needs (Docker engine, base
# images, the pinned Python toolchain, fixtures), then runs lint, unit tests, molecule and the
# README's "Try it" (`make demo`, its curl lines, `make demo-down`).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-dev.sha256
SCENARIOS ?= default gpu_facts fleet debian13

.PHONY: provision controller test demo demo-down demo-test deps engine base-images fixtures test-bundle test-tools lint unit molecule syntax clean-cache

test: deps engine base-images fixtures lint unit syntax molecule demo-test

# Provision this machine (the default inventory): the pinned Ansible, then `ansible-playbook site.yml`.
provision: controller
	$(BIN)/ansible-playbook site.yml

# Try it on this machine: the real site.yml in a local systemd container with the test fixtures'
# small models, serving on 127.0.0.1:28000; prints the key and curl lines (README, "Try it").
# LOCALAI_DEMO_VARS=<vars file> names other models. `make demo-down` removes it.
demo: deps engine base-images fixtures
	scripts/demo.sh up

demo-down: deps
	scripts/demo.sh down

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

# Debian's Prometheus (molecule's metrics test scrapes the stack with a real one) and HAProxy
# (the unit tests check every rendered haproxy.cfg with `haproxy -c`; only its binary is used).
test-tools:
	@command -v prometheus >/dev/null 2>&1 && command -v haproxy >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus haproxy >/dev/null; }

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint -s .
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/ansible-lint

unit: deps test-tools
	$(BIN)/pytest

syntax: deps
	$(BIN)/ansible-playbook site.yml --syntax-check

molecule: deps engine base-images fixtures test-bundle test-tools
	for s in $(SCENARIOS); do \
	  PATH=$(abspath $(BIN)):$$PATH $(BIN)/molecule test -s $$s; \
	done

# `make demo`, the README's curl lines and `make demo-down`, as a user runs them. After the
# molecule scenarios (the default one is destroyed by then), the demo borrows that scenario's
# nested /var/lib/docker volume, which holds the image it built, so nothing compiles again; the
# test file is named, so a missing or empty one fails (pytest exits 4 or 5, never 0).
demo-test: deps engine base-images fixtures
	LOCALAI_DEMO_DOCKER_VOLUME=localai-default-docker $(BIN)/pytest -p no:cacheprovider tests/demo/test_demo.py

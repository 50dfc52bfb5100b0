# The README's commands. Each bootstraps uv when it is missing and uses the committed uv.lock.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=
# Two test processes, each taking whole test files (a module's worker or platform stays
# in one process). Most tests wait on sessions and servers rather than compute: on two
# cores the suite took 735 s this way and 1073 s in one process (2026-12-03; the order
# is in tests/scheduling.py).
TEST_WORKERS ?= 2

.PHONY: bootstrap sync test demo bench lint format

bootstrap:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

sync: bootstrap
	$(UV) sync --locked --all-packages --all-groups --compile-bytecode

test: sync
	$(UV) run --locked --no-sync pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: sync
	$(UV) run --locked --no-sync python examples/demo.py

bench: sync
	$(UV) run --locked --no-sync python bench/run_all.py

lint: sync
	$(UV) run --locked --no-sync ruff format --check .
	$(UV) run --locked --no-sync ruff check .

format: sync
	$(UV) run --locked --no-sync ruff format .
	$(UV) run --locked --no-sync ruff check --fix .

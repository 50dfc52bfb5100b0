"""The order in which `make test` (pytest -n 2 --dist loadfile) hands out test files.

xdist's default puts files with the most tests first, so single-test files come last:
the two fault tests (100 Snakemake jobs, 20 Prefect runs) then ran at the same time at
the end of the suite. They are CPU-bound, so together they took 215 s where one takes
75-150 s, and the suite's tail waited on them. Here they form one unit that runs first,
one after the other in a single process, while the other process works through the
rest; the other slow files follow (slow ones first balances the two processes), then
everything else in its usual order. A plain `pytest` run keeps this order too.
"""

from __future__ import annotations

from typing import Any

import pytest

# One unit, first, run in one process: never beside each other.
CPU_BOUND = (
    "tests/reliability/test_faults_snakemake.py",
    "tests/reliability/test_faults_prefect.py",
)
CPU_BOUND_UNIT = "cpu-bound fault tests"
# Next, the other slow files, longest first (file totals from `pytest --durations`,
# 2026-12-03). The first goes to the other process; the second is queued behind the
# CPU-bound unit in the same process (xdist keeps a few tests queued per process), so it
# is a quick one. Measured: with Prefect's files beside the CPU-bound unit the suite took
# 548 s; with Snakemake's there (as CPU-hungry), 756 s.
SLOW = (
    "tests/prefect/test_e2e.py",
    "tests/snakemake/test_units.py",
    "tests/snakemake/test_workflows.py",
    "tests/prefect/test_task_runner.py",
    "tests/reliability/test_worker_restart.py",
    "tests/reliability/test_driver_restart.py",
    "tests/reliability/test_bad_input.py",
    "tests/e2e/test_reduction_example.py",
    "tests/reliability/test_platform_restart.py",
    "tests/reliability/test_secrets.py",
    "tests/dask/test_cluster.py",
    "tests/dask/test_prefect.py",
)
RANK = {path: rank for rank, path in enumerate((*CPU_BOUND, *SLOW))}


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Ranked files first, in rank order; the rest after, as collected (stable sort)."""
    items.sort(key=lambda item: RANK.get(file_of(item.nodeid), len(RANK)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Whole files to each process as `--dist loadfile` does, but in the order above and
    with the CPU-bound files as one unit."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SlowFirstFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = file_of(nodeid)
            return CPU_BOUND_UNIT if path in CPU_BOUND else path

    config.option.loadscopereorder = False  # keep the collection order set above
    return SlowFirstFileScheduling(config, log)

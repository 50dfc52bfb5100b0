"""The order in which `make test` (pytest -n 2 --dist loadfile) hands out test files.

xdist's default puts files with the most tests first, so single-test files come last:
the two fault tests (100 Snakemake jobs, 20 Prefect runs) then ran at the same time at
the end of the suite. They are CPU-bound, so together they took 215 s where one takes
75-150 s, and the suite's tail waited on them. Here they form one unit, run one after
the other in a single process, while the other process works through the rest.

A Prefect server that starts beside them is starved of CPU (its migrations took 100 to
180 s, against 5 s on a quiet machine), so both processes start theirs first: the first
file handed out is a short one that needs the server, the second (to the other process)
is `tests/prefect/test_e2e.py`, and the CPU-bound unit comes third, which xdist queues
behind the first file (it keeps a process topped up while it has 2 or fewer tests
pending). The fourth is queued behind the CPU-bound unit, so it is quick. The other
slow files follow, longest first, then everything else in its usual order. A plain
`pytest` run keeps this order too.
"""

from __future__ import annotations

from typing import Any

import pytest

# One unit, run in one process: never beside each other.
CPU_BOUND = (
    "tests/reliability/test_faults_snakemake.py",
    "tests/reliability/test_faults_prefect.py",
)
CPU_BOUND_UNIT = "cpu-bound fault tests"
FIRST = (
    "tests/dask/test_prefect.py",  # one test; starts this process's Prefect server
    "tests/prefect/test_e2e.py",  # to the other process; starts its server
)
# After the CPU-bound unit (file totals from `pytest --durations`, 2026-12-03).
SLOW = (
    "tests/snakemake/test_units.py",  # queued behind the CPU-bound unit: quick
    "tests/snakemake/test_workflows.py",
    "tests/prefect/test_task_runner.py",
    "tests/reliability/test_worker_restart.py",
    "tests/reliability/test_driver_restart.py",
    "tests/reliability/test_bad_input.py",
    "tests/e2e/test_reduction_example.py",
    "tests/reliability/test_platform_restart.py",
    "tests/reliability/test_secrets.py",
    "tests/dask/test_cluster.py",
)
RANK = {path: rank for rank, path in enumerate((*FIRST, *CPU_BOUND, *SLOW))}


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

"""Unit rules of canfar_core.dask beside the end-to-end tests: credentials, scheduler file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import dask.config
import pytest
from canfar_core.dask.credentials import cluster_security, role_environment, write_role_file
from canfar_core.dask.scheduler import read_scheduler_file
from canfar_core.dask.worker import describe_end
from canfar_core.outcome import Outcome, OutcomeKind
from canfar_core.phase import Phase
from distributed import Security


def test_each_role_gets_the_cluster_ca_and_its_own_pair_as_dask_config(monkeypatch) -> None:
    security = cluster_security()
    env = role_environment(security, "worker")
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"].startswith("-----BEGIN PRIVATE KEY")
    # What `dask worker` will make of these variables: the same credentials, in memory.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dask.config.refresh()
    try:
        seen = Security()
        assert seen.require_encryption is True
        assert seen.tls_worker_key == security.tls_worker_key
        assert seen.tls_ca_file == security.tls_ca_file
    finally:
        for key in env:
            monkeypatch.delenv(key)
        dask.config.refresh()


def test_the_role_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    security = cluster_security()
    path = write_role_file(tmp_path / "secrets" / "w.env", security, "scheduler")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "TLS__SCHEDULER__CERT" in path.read_text()
    with pytest.raises(FileExistsError):
        write_role_file(path, security, "scheduler")


def test_a_scheduler_file_counts_only_once_complete(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.json"
    assert read_scheduler_file(path) is None
    path.write_text('{"address": "tls://10.0.')  # a write in progress
    assert read_scheduler_file(path) is None
    path.write_text(json.dumps({"address": "tls://10.0.0.7:40123", "type": "Scheduler"}))
    assert read_scheduler_file(path) == "tls://10.0.0.7:40123"


def test_a_worker_end_names_the_session_its_reason_and_what_dask_does() -> None:
    outcome = Outcome(
        "abc12345", "dask-x-0", OutcomeKind.OUT_OF_MEMORY, Phase.FAILED, 137, "killed (OOM)"
    )
    # The diagnosis is the core's (the words and category both plugins use).
    assert describe_end("dask-x-0", outcome) == (
        "Dask worker dask-x-0 ended unexpectedly (CANFAR session abc12345 (out-of-memory, "
        "exit code 137): killed (OOM)); OutOfMemory: killed, most likely for using more "
        "memory than its ram allows. Request more memory (ram). Dask reruns its unfinished "
        "tasks on the other workers."
    )


def test_sizes_are_raised_to_the_servers_options_and_said_so(caplog) -> None:
    from canfar_core.context import Context
    from canfar_core.dask.options import granted
    from canfar_core.errors import SpecError

    context = Context.model_validate({"cores": {"options": [1, 2, 4, 8]}})
    with caplog.at_level("WARNING", logger="canfar_core.dask"):
        assert granted(context, "cores", 3) == 4
        assert granted(context, "cores", 1.5) == 2  # rounding to a whole number: silent
    assert [r.getMessage() for r in caplog.records] == [
        "Each worker session: cores 3 raised to 4, the smallest value the server allows."
    ]
    with pytest.raises(SpecError, match="the largest cores allowed is 8"):
        granted(context, "cores", 9)

"""The plugin's pure parts: resource mapping, names, ledger, messages, settings.

These use the real canfar-core models (a `Context` parsed from the JSON canfar.net and
the chart's file mode serve), not stand-ins.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
from canfar_core.context import Context
from canfar_core.models import NAME_MAX_LENGTH, NAME_PATTERN
from canfar_core.outcome import Outcome, OutcomeKind
from canfar_core.phase import Phase
from snakemake_executor_plugin_canfar.diagnostics import command_exit_code, failure_message
from snakemake_executor_plugin_canfar.ledger import RunLedger, job_key
from snakemake_executor_plugin_canfar.naming import job_log_path, session_name
from snakemake_executor_plugin_canfar.resources import (
    Defaults,
    RequestError,
    SessionRequest,
    plan_request,
)
from snakemake_executor_plugin_canfar.settings import ExecutorSettings
from snakemake_executor_plugin_canfar.validation import settings_problems
from snakemake_executor_plugin_canfar.wakeup import Wakeup

IMAGE = "images.canfar.net/skaha/base:latest"

# canfar.net (LimitRange mode): every integer up to the maximum.
CANFAR_NET = Context.model_validate(
    {
        "cores": {
            "default": 1,
            "defaultRequest": 1,
            "defaultLimit": 16,
            "options": list(range(1, 17)),
        },
        "memoryGB": {
            "default": 4,
            "defaultRequest": 4,
            "defaultLimit": 32,
            "options": list(range(1, 193)),
        },
        "gpus": {"options": list(range(1, 8))},
        "maxInteractiveSessions": 3,
    }
)
# The chart's file mode: sparse RAM options, no GPUs.
FILE_MODE = Context.model_validate(
    {
        "cores": {"default": 2, "options": list(range(1, 17))},
        "memoryGB": {"default": 8, "options": [1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32]},
        "gpus": {"options": []},
        "maxInteractiveSessions": "5",
    }
)


def plan(resources: dict[str, object], threads: int = 1, context: Context = CANFAR_NET, **kw):
    defaults = Defaults(**{"image": IMAGE, **kw})
    return plan_request(
        label="rule align", threads=threads, resources=resources, defaults=defaults, context=context
    )


def test_threads_and_memory_round_up_to_allowed_values() -> None:
    # What Snakemake passes for `threads: 4` and `mem_mb=3000`.
    request = plan({"mem_mb": 3000, "mem_mib": 2862, "_cores": 4}, threads=4)
    assert (request.cores, request.ram, request.gpus) == (4, 3, None)
    sparse = plan({"mem_mb": 9000, "mem_mib": 8584}, threads=3, context=FILE_MODE)
    assert (sparse.cores, sparse.ram) == (3, 10)
    # The rule every engine shares (canfar_core.allowed.fit): raised, and said so; a
    # request only rounded up to its whole number is not worth a line.
    assert sparse.notes == (
        "rule align: mem_mb=9000 (8.4 GiB) raised to 10, the smallest value the server allows",
    )
    assert request.notes == ()


def test_exact_binary_memory_is_not_rounded_past_its_gib() -> None:
    # mem_mib=1024 is exactly 1 GiB; Snakemake's derived mem_mb=1074 must not make it 2.
    assert plan({"mem_mib": 1024, "mem_mb": 1074}).ram == 1


def test_defaults_apply_when_the_job_declares_nothing() -> None:
    assert plan({}).ram == 4  # the server's default request
    assert plan({}, context=FILE_MODE).ram == 8
    assert asdict(plan({}, ram=6, cores=2, gpus=1)) == {
        "image": IMAGE,
        "cores": 2,
        "ram": 6,
        "gpus": 1,
        "runtime_minutes": None,
        "notes": (),
    }
    assert plan({}, threads=8, cores=2).cores == 8  # threads raise the minimum


def test_per_rule_overrides_win() -> None:
    request = plan(
        {
            "canfar_image": "images.canfar.net/me/tool:1",
            "canfar_cores": 6,
            "canfar_ram": "12",
            "canfar_gpus": 2,
            "mem_mb": 1000,
            "gpu": 1,
        },
        threads=2,
    )
    assert (request.image, request.cores, request.ram, request.gpus) == (
        "images.canfar.net/me/tool:1",
        6,
        12,
        2,
    )
    assert plan({"gpu": 1}).gpus == 1
    assert plan({"gpu": 0}).gpus is None


def test_runtime_minutes_become_a_limit_in_seconds() -> None:
    assert plan({"runtime": 90}).runtime_seconds == 5400
    assert plan({}).runtime_seconds is None


@pytest.mark.parametrize(
    ("resources", "threads", "expected"),
    [
        (
            {},
            64,
            "rule align requests threads=64 (cores), which is not allowed: "
            "the largest cores allowed is 16.",
        ),
        (
            {"mem_mb": 300000},
            1,
            "rule align requests mem_mb=300000 (279.4 GiB), which is not allowed: "
            "the largest ram allowed is 192 GiB.",
        ),
        (
            {"gpu": 9},
            1,
            "rule align requests gpu=9, which is not allowed: the largest gpus allowed is 7.",
        ),
        (
            {"canfar_cores": "many"},
            1,
            "rule align: canfar_cores='many' is not allowed: it must be a number.",
        ),
    ],
)
def test_impossible_requests_name_rule_value_and_maximum(
    resources: dict[str, object], threads: int, expected: str
) -> None:
    with pytest.raises(RequestError) as caught:
        plan(resources, threads=threads)
    assert str(caught.value) == expected


def test_gpus_on_a_server_without_gpus() -> None:
    with pytest.raises(RequestError, match="this server offers no gpus options"):
        plan({"gpu": 1}, context=FILE_MODE)


def test_a_job_without_any_image_is_refused() -> None:
    with pytest.raises(RequestError, match="rule align has no container image: set --canfar-image"):
        plan_request(
            label="rule align", threads=1, resources={}, defaults=Defaults(), context=CANFAR_NET
        )


def test_session_names_fit_the_server_and_differ_per_attempt() -> None:
    names = {
        session_name("ab12cd", "align_reads_with_a_very_long_rule_name_indeed", 1234, attempt)
        for attempt in (1, 2)
    }
    assert len(names) == 2
    group = session_name("ab12cd", "prep", "5d8e6c1a-94f3-5b7e-a0a5-0c3a1f0e9b11", 1)
    assert group == "smk-ab12cd-prep-5d8e6c1a-1"
    for name in [*names, group, session_name("ab12cd", "___", 1, 1)]:
        assert len(name) <= NAME_MAX_LENGTH
        assert NAME_PATTERN.match(name), name


def test_log_paths_follow_rule_and_wildcards(tmp_path: Path) -> None:
    path = job_log_path(tmp_path, "d", {"somewildcard": "somedir2/subdir"}, 7, "abcdefgh")
    assert path == tmp_path / "d" / "somewildcard=somedir2_subdir" / "7-abcdefgh.log"
    assert job_log_path(tmp_path, "a", None, 1, "x1234567") == tmp_path / "a" / "1-x1234567.log"


def test_ledger_survives_restarts_and_torn_lines(tmp_path: Path) -> None:
    key = job_key(["out/b.txt", "out/a.txt"])
    assert key == job_key(["out/a.txt", "out/b.txt"])
    ledger = RunLedger(tmp_path)
    ledger.record_submit(key, "s1", "smk-run1-a-1-1", "run1")
    ledger.record_submit(key, "s2", "smk-run1-a-1-2", "run1")
    ledger.record_done("s1")
    with open(tmp_path / "ledger.jsonl", "a") as handle:
        handle.write('{"op": "submit", "key": "')  # a kill mid-write

    reopened = RunLedger(tmp_path)
    assert reopened.open_sessions(key) == ["s2"]
    assert reopened.open_sessions(key, exclude_run="run1") == []
    reopened.compact()
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(line)["session"] for line in lines] == ["s2"]
    reopened.compact(alive={"s9"})  # s2 ended while nobody watched
    assert RunLedger(tmp_path).open_count == 0


def _outcome(kind: OutcomeKind, code: int | None, logs: str = "", **kw: object) -> Outcome:
    return Outcome(
        "abcd1234", "smk-x", kind, Phase.FAILED, code, kw.pop("reason", None), logs, **kw
    )  # type: ignore[arg-type]


REQUEST = SessionRequest(image=IMAGE, cores=4, ram=3, gpus=None, runtime_minutes=2)


def test_rule_exit_code_is_recovered_from_the_session_log() -> None:
    logs = "RuleException:\nCommand 'set -euo pipefail;  exit 3' returned non-zero exit status 3.\n"
    assert command_exit_code(logs) == 3
    message = failure_message(
        _outcome(OutcomeKind.FAILED, 1, logs, reason="the command exited with code 1"),
        label="rule fails",
        request=REQUEST,
        pending_timeout=None,
    )
    assert message == (
        f"CANFAR session abcd1234 (image {IMAGE}; 4 cores, 3 GiB) failed: the rule's command "
        "exited with code 3 (the session's Snakemake exited with code 1). "
    )


def test_out_of_memory_runtime_and_pending_messages() -> None:
    oom = failure_message(
        _outcome(OutcomeKind.OUT_OF_MEMORY, 137),
        label="rule big",
        request=REQUEST,
        pending_timeout=None,
    )
    assert "most likely out of memory (exit code 137, ram=3 GiB); raise mem_mb for rule big" in oom
    runtime = failure_message(
        _outcome(OutcomeKind.RUNTIME_EXCEEDED, 124),
        label="rule s",
        request=REQUEST,
        pending_timeout=None,
    )
    assert "exceeded its runtime of 2 min and was stopped (exit code 124)" in runtime
    pending = failure_message(
        _outcome(
            OutcomeKind.PENDING_TIMEOUT,
            None,
            events_table="TYPE  REASON\nWarning  FailedScheduling",
        ),
        label="rule s",
        request=REQUEST,
        pending_timeout=30,
    )
    assert "was still Pending after 30 s and was deleted" in pending
    assert pending.endswith("Session events:\nTYPE  REASON\nWarning  FailedScheduling\n")


def test_settings_problems_are_one_sentence_each() -> None:
    assert settings_problems(ExecutorSettings()) == []
    problems = settings_problems(
        ExecutorSettings(cores=0, pending_timeout=-1, submit_concurrency=0, registry_username="u")
    )
    assert problems == [
        "--canfar-cores=0 is not allowed: it must be at least 1.",
        "--canfar-pending-timeout=-1 is not allowed: "
        "use a number of seconds, or 0 to wait forever.",
        "--canfar-submit-concurrency=0 is not allowed: it must be at least 1.",
        "--canfar-registry-username and --canfar-registry-secret must be given together.",
    ]


def test_settings_repr_hides_secrets() -> None:
    text = repr(ExecutorSettings(token="tok-SECRET", registry_secret="reg-SECRET"))
    assert not re.search("SECRET", text)


def test_plugin_flags_beat_snakemakes_generated_defaults_but_not_the_rules() -> None:
    # What --default-resources gives every rule: mem_mb=1000, mem_mib=954.
    generated_only = {"mem_mb": 1000, "mem_mib": 954}
    assert plan(generated_only, ram=8).ram == 1  # if the rule had declared it
    flagged = plan_request(
        label="rule align",
        threads=1,
        resources=generated_only,
        defaults=Defaults(image=IMAGE, ram=8),
        context=CANFAR_NET,
        generated=frozenset({"mem_mb", "mem_mib"}),
    )
    assert flagged.ram == 8  # --canfar-ram 8 beats the generated default...
    declared = plan_request(
        label="rule align",
        threads=1,
        resources={"mem_mb": 3000, "mem_mib": 2862},
        defaults=Defaults(image=IMAGE, ram=8),
        context=CANFAR_NET,
    )
    assert declared.ram == 3  # ...and a rule's own mem_mb beats --canfar-ram.


def test_max_status_checks_per_second_caps_the_list_rate() -> None:
    """One list is one status check of every job: 0.1 per second is one list per 10 s."""
    from snakemake_executor_plugin_canfar.run_context import status_intervals
    from snakemake_executor_plugin_canfar.validation import status_problems

    assert status_intervals(10, same_machine=True) == (0.5, 10.0)
    assert status_intervals(10, same_machine=True, checks_per_second=0.1) == (10.0, 10.0)
    assert status_intervals(10, same_machine=False, checks_per_second=0.05) == (20.0, 20.0)
    assert status_problems(10) == [] and status_problems(0.1) == []
    (sentence,) = status_problems(0.001)
    assert "--max-status-checks-per-second=0.001 is not allowed" in sentence


def test_the_status_sleep_ends_when_another_thread_says_a_session_ended() -> None:
    """The tracker's end hook (another thread) cuts the status thread's sleep short;
    a wake that comes between two sleeps is kept for the next one, not lost."""
    wakeup = Wakeup()

    async def sleeps() -> tuple[bool, bool, bool]:
        waker = threading.Timer(0.2, wakeup.set)
        waker.start()
        woken = await wakeup.sleep(30)
        wakeup.set()  # while no sleep is under way
        kept = await wakeup.sleep(30)
        timed_out = await wakeup.sleep(0.05)
        return woken, kept, timed_out

    async def bounded() -> tuple[bool, bool, bool]:
        return await asyncio.wait_for(sleeps(), 10)

    assert asyncio.run(bounded()) == (True, True, False)

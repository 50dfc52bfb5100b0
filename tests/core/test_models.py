"""Phases, lenient session parsing, strict specs, resource choice, replica helpers."""

from __future__ import annotations

import pytest
from canfar_core.context import Context
from canfar_core.distributed import chunk, stripe
from canfar_core.errors import SpecError
from canfar_core.models import Session, SessionSpec, parse_events
from canfar_core.names import sanitize, unique_name
from canfar_core.phase import Phase

CONTEXT = Context.model_validate(
    {
        "cores": {
            "default": 1,
            "defaultRequest": 1,
            "defaultLimit": 16,
            "options": [1, 2, 4, 8, 16],
        },
        "memoryGB": {
            "default": 4,
            "defaultRequest": 4,
            "defaultLimit": 32,
            "options": [1, 2, 4, 8, 192],
        },
        "gpus": {"options": [1, 2]},
        "maxInteractiveSessions": "5",
    }
)


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("Pending", Phase.PENDING),
        ("Running", Phase.RUNNING),
        ("Completed", Phase.COMPLETED),
        ("Succeeded", Phase.COMPLETED),
        ("Failed", Phase.FAILED),
        ("Failed (BackoffLimitExceeded)", Phase.FAILED),
        ("Error", Phase.FAILED),
        ("Terminating", Phase.TERMINATING),
        ("Unknown", Phase.UNKNOWN),
        ("Evicted", Phase.UNKNOWN),
        ("", Phase.UNKNOWN),
    ],
)
def test_every_status_any_server_emits_is_normalised(status: str, phase: Phase) -> None:
    assert Phase.parse(status) is phase


def test_legacy_session_with_none_strings_parses() -> None:
    session = Session.model_validate(
        {
            "id": "abc12345",
            "status": "Failed (DeadlineExceeded)",
            "startTime": "<none>",
            "expiryTime": "<none>",
            "connectURL": "not-applicable",
            "appid": "<none>",
            "cpuCoresInUse": "<none>",
            "futureField": 3,
        }
    )
    assert session.start_time is None and session.connect_url is None
    assert session.phase is Phase.FAILED and session.status_reason == "DeadlineExceeded"


def test_java_time_without_seconds_parses() -> None:
    session = Session.model_validate({"id": "a1234567", "startTime": "2026-07-01T12:00Z"})
    assert session.start_time is not None and session.start_time.minute == 0


def test_events_table_parses_into_records() -> None:
    rows = [
        ("TYPE", "REASON", "MESSAGE", "FIRST-TIME", "LAST-TIME"),
        ("Normal", "Scheduled", "Successfully assigned to node1", "<none>", "<none>"),
        ("Warning", "Failed", "Error: ErrImagePull", "2026-07-01T12:00:05Z", "2026-07-01T12:01Z"),
    ]
    table = "".join("   ".join(row) + "\n" for row in rows)
    events = parse_events(table)
    assert [e.reason for e in events] == ["Scheduled", "Failed"]
    assert events[0].first_time is None and events[1].message == "Error: ErrImagePull"
    assert parse_events("<none>\n") == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "My_Job"}, "name"),
        ({"name": "-lead"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"env": {"A": "b=c"}}, "env[A]"),
        ({"env": {"A": ""}}, "env[A]"),
        ({"env": {"A": 'say "hi"'}}, "env[A]"),
        ({"env": {"1A": "x"}}, "env key"),
        ({"args": "a\\b"}, "args"),
        ({"cores": 0.5}, "cores"),
        ({"gpus": 0}, "gpus"),
        ({"kind": "vm"}, "kind"),
    ],
)
def test_spec_refuses_what_the_server_would_mangle(kwargs: dict, field: str) -> None:
    base = {"name": "job-1", "image": "images.canfar.net/skaha/terminal:1.1.2"}
    with pytest.raises(SpecError) as err:
        SessionSpec(**{**base, **kwargs})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}=")


def test_spec_params_are_in_server_order() -> None:
    spec = SessionSpec(
        name="j", image="images.canfar.net/x:1", cores=2, ram=4.5, env={"A": "1", "B": "2"}
    )
    assert spec.to_params() == [
        ("name", "j"),
        ("image", "images.canfar.net/x:1"),
        ("type", "headless"),
        ("cores", "2"),
        ("ram", "4.5"),
        ("env", "A=1"),
        ("env", "B=2"),
    ]


def test_dollars_are_escaped_for_the_servers_template_splice() -> None:
    spec = SessionSpec(
        name="j", image="images.canfar.net/x:1", cmd="/bin/sh", args="-c $(S)", env={"S": "$HOME"}
    )
    params = dict(spec.to_params())
    assert params["args"] == "-c \\$(S)"
    assert params["env"] == "S=\\$HOME"


def test_smallest_allowed_rounds_up_and_names_the_maximum() -> None:
    assert CONTEXT.smallest_allowed("cores", 3) == 4
    assert CONTEXT.smallest_allowed("ram", 2.93) == 4
    assert CONTEXT.smallest_allowed("ram", 9) == 192
    with pytest.raises(SpecError, match="largest cores allowed is 16") as err:
        CONTEXT.smallest_allowed("cores", 17, field="threads")
    assert err.value.field == "threads"
    assert CONTEXT.max_interactive_sessions == 5


def test_context_check_matches_server_truncation() -> None:
    CONTEXT.check("cores", 1.5)  # int(1.5) == 1 is an option: the server accepts it
    with pytest.raises(SpecError, match="allowed values are 1, 2, 4, 8, 16"):
        CONTEXT.check("cores", 3)


def test_stripe_and_chunk_match_the_official_semantics() -> None:
    items = list(range(10))
    assert list(stripe(items, 1, 3)) == [0, 3, 6, 9]
    assert list(stripe(items, 3, 3)) == [2, 5, 8]
    assert chunk(items, 1, 3) == [0, 1, 2]
    assert chunk(items, 3, 3) == [6, 7, 8, 9]
    assert chunk([1, 2], 2, 4) == [2] and chunk([1, 2], 4, 4) == []
    with pytest.raises(ValueError, match="REPLICA_ID=4"):
        list(stripe(items, 4, 3))
    with pytest.raises(ValueError, match="REPLICA_COUNT=0"):
        chunk(items, 1, 0)


def test_stripe_reads_replica_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICA_ID", "2")
    monkeypatch.setenv("REPLICA_COUNT", "2")
    assert list(stripe("abcd")) == ["b", "d"]


def test_unique_names_are_valid_and_distinct() -> None:
    names = {unique_name("Snakemake", "Rule_With.Dots", "12") for _ in range(50)}
    assert len(names) == 50
    for name in names:
        SessionSpec(name=name, image="images.canfar.net/x:1")
        assert name.startswith("snakemake-rule-with-dots-12-")
    assert len(unique_name("x" * 100)) <= 63
    assert sanitize("__") == "session"

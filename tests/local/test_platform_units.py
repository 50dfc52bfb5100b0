"""Unit tests of the platform's Java/Kubernetes emulation helpers (no server needed)."""

from __future__ import annotations

import math

import pytest
from canfar_local.argv import build_argv, container_env, java_split, k8s_expand
from canfar_local.bundle import headless_bundle, java_replacement, parse_container
from canfar_local.errors import BadRequest, UnexpectedError
from canfar_local.render import (
    cpu_cores,
    decimal_format,
    java_fixed,
    java_instant,
    java_offset_datetime,
    kubectl_table,
    memory_gb,
)
from canfar_local.scheduler import admissible
from canfar_local.store import QUEUED, RUNNING, SessionRecord
from canfar_local.validation import java_int, java_parse_double

GIB = 1024**3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a b", ["a", "b"]),
        ("a  b", ["a", "", "b"]),
        (" a", ["", "a"]),
        ("a  ", ["a"]),
        ("", [""]),
        (" ", []),
        ("abc", ["abc"]),
    ],
)
def test_java_split_on_space(value: str, expected: list[str]) -> None:
    assert java_split(value, " ") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("A=b", ["A", "b"]), ("A=b=c", ["A", "b", "c"]), ("A=", ["A"]), ("=b", ["", "b"])],
)
def test_java_split_on_equals(value: str, expected: list[str]) -> None:
    assert java_split(value, "=") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(HOME)/x", "/h/x"),
        ("$$(HOME)", "$(HOME)"),
        ("$$$(HOME)", "$/h"),
        ("$(NOPE)", "$(NOPE)"),
        ("$(HOME", "$(HOME"),
        ("$HOME", "$HOME"),
        ("a$", "a$"),
        ("$(A)$(B)", "12"),
        ("$$", "$"),
    ],
)
def test_k8s_expansion(text: str, expected: str) -> None:
    assert k8s_expand(text, {"HOME": "/h", "A": "1", "B": "2"}) == expected


def test_env_values_expand_only_earlier_variables() -> None:
    entries = container_env([("A", "x$(B)"), ("B", "b"), ("C", "$(B)$(HOME)")], [("HOME", "/h")])
    assert entries == [("A", "x$(B)"), ("B", "b"), ("C", "b$(HOME)"), ("HOME", "/h")]


def test_build_argv_variants() -> None:
    env = {"X": "1"}
    assert build_argv("echo", ["$(X)", "$$(X)"], env, ["sleep"]) == ["echo", "1", "$(X)"]
    assert build_argv(None, ["python", "-V"], env, ["sleep"]) == ["python", "-V"]
    assert build_argv(None, None, env, ["sleep", "infinity"]) == ["sleep", "infinity"]
    assert build_argv("run", [""], env, ["sleep"]) == ["run", ""]


def test_bundle_is_built_like_the_server() -> None:
    bundle = headless_bundle("img", "cmd", "a  b", ["K=v", "BAD", "X=1=2", "E="])
    assert bundle == (
        'image: "img"\n        command: ["cmd"]\n        args: ["a", "", "b"]'
        '\n        env:\n        - name: K\n          value: "v"'
    )


@pytest.mark.parametrize(
    ("replacement", "expected"),
    [
        ("plain", "plain"),
        ("a\\tb", "atb"),
        ("a\\\\b", "a\\b"),
        ("\\$(HOME)", "$(HOME)"),
        ("x$0y", "x${headless.image.bundle}y"),
    ],
)
def test_java_replacement_semantics(replacement: str, expected: str) -> None:
    assert java_replacement(replacement) == expected


@pytest.mark.parametrize(
    ("replacement", "error", "message"),
    [
        ("$(HOME)", BadRequest, "Illegal group reference"),
        ("$$", BadRequest, "Illegal group reference"),
        ("a$", BadRequest, "Illegal group reference: group index is missing"),
        ("a\\", BadRequest, "character to be escaped is missing"),
        ("${x}", BadRequest, "No group with name {x}"),
        ("$1", UnexpectedError, "java.lang.IndexOutOfBoundsException: No group 1"),
    ],
)
def test_java_replacement_errors(replacement: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        java_replacement(replacement)
    assert info.value.message == message  # type: ignore[attr-defined]


def test_parse_container_applies_yaml_escapes_after_regex_stage() -> None:
    spec = parse_container("img", None, "a\\\\tb", ["K=x\\\\ny"], "job")
    assert spec.args == ["a\tb"]
    assert spec.env == [("K", "x\ny")]
    assert spec.command is None


def test_parse_container_quote_injection_splits_arguments() -> None:
    spec = parse_container("img", "echo", 'a","b', [], "job", java_regex=False)
    assert spec.command == ["echo"]
    assert spec.args == ["a", "b"]


def test_parse_container_broken_yaml_is_unexpected() -> None:
    with pytest.raises(UnexpectedError) as info:
        parse_container("img", "echo", 'say "hi"', [], "job")
    assert info.value.body().startswith("unexpected exception: org.yaml.snakeyaml.")


def test_parse_container_invalid_yaml_escape_is_unexpected() -> None:
    with pytest.raises(UnexpectedError):
        parse_container("img", "echo", "\\\\q", [], "job")


def test_java_time_formats() -> None:
    assert java_offset_datetime(1782907205) == "2026-07-01T12:00:05Z"
    assert java_offset_datetime(1782907200) == "2026-07-01T12:00Z"
    assert java_instant(1782907200) == "2026-07-01T12:00:00Z"


def test_quantities() -> None:
    assert memory_gb(8 * GIB) == "8.59"
    assert memory_gb(1 * GIB) == "1.07"
    assert memory_gb(1.5 * GIB) == "1.61"
    assert cpu_cores(2.0) == "2"
    assert cpu_cores(1.5) == "1.500"
    assert java_fixed(0.125, 2) == "0.13"
    assert decimal_format(192) == "192"
    assert decimal_format(274.877906944) == "274.878"


def test_java_double_parsing() -> None:
    assert java_parse_double(" 2 ") == 2.0
    assert java_parse_double("1.5d") == 1.5
    assert java_parse_double("0x1p1") == 2.0
    assert math.isnan(java_parse_double("NaN"))
    for bad in ("inf", "1_0", "two", "", "1,5"):
        with pytest.raises(ValueError):
            java_parse_double(bad)
    assert java_int(math.nan) == 0
    assert java_int(0.9) == 0
    assert java_int(-0.5) == 0


def test_kubectl_table_layout() -> None:
    table = kubectl_table(("A", "B", "C"), [("x", "yy", "z")])
    assert table.splitlines() == ["A         B         C", "x         yy        z"]


def _record(seq: int, cores: float, ram: float, phase: str = QUEUED) -> SessionRecord:
    return SessionRecord(
        id=f"s{seq:07d}",
        userid="u",
        type="headless",
        name="n",
        image="i",
        cores_request=cores,
        cores_limit=cores,
        ram_request_gib=ram,
        ram_limit_gib=ram,
        fixed=True,
        gpus=0,
        argv=[],
        env={},
        created=0.0,
        deadline_seconds=10,
        seq=seq,
        phase=phase,
    )


def test_admission_is_first_come_while_it_fits() -> None:
    records = [
        _record(1, 2, 4, RUNNING),
        _record(2, 2, 4),
        _record(3, 4, 4),
        _record(4, 1, 1),
    ]
    admitted = admissible(records, capacity_cores=5, capacity_ram_gib=16)
    assert [r.seq for r in admitted] == [2, 4]

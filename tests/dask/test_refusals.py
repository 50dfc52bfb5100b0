"""Bad input to CanfarCluster: one sentence naming the field, before any session exists."""

from __future__ import annotations

import pytest
from canfar_core.dask import CanfarCluster
from canfar_core.errors import SpecError

from tests.dask.conftest import listed


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"cores": 0}, "cores=0 is not allowed: a number of cores greater than 0."),
        ({"ram": "lots"}, "ram='lots' is not allowed: a number of GiB greater than 0."),
        ({"cores": 64}, "cores=64 is not allowed: the largest cores allowed is 16."),
        ({"ram": 500}, "ram=500 is not allowed: the largest ram allowed is 192 GiB."),
        ({"n_workers": -1}, "n_workers=-1 is not allowed: a whole number of workers >= 0."),
        ({"n_workers": 1.5}, "n_workers=1.5 is not allowed: a whole number of workers >= 0."),
        ({"scheduler": "remote"}, "scheduler='remote' is not allowed: 'local' (in this process"),
        ({"death_timeout": -5}, "death_timeout=-5 is not allowed: a number of seconds"),
        ({"env": {"1BAD": "x"}}, "env key='1BAD' is not allowed: letters, digits and '_'"),
        (
            {"image": "docker.io/library/python:3.11"},
            "image='docker.io/library/python:3.11' is not allowed: images must come from "
            "images.canfar.net.",
        ),
    ],
)
def test_bad_values_are_refused_with_one_sentence(platform, cluster_kwargs, changes, sentence):
    with pytest.raises(SpecError) as refused:
        CanfarCluster(**{**cluster_kwargs, "n_workers": 1, **changes})
    assert str(refused.value).startswith(sentence), str(refused.value)
    assert "\n" not in str(refused.value)
    assert platform.created() == [], "nothing was submitted"


def test_an_unwritable_shared_dir_is_refused(platform, cluster_kwargs, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SpecError, match=r"shared_dir='.*a-file/x' is not allowed: a directory"):
        CanfarCluster(**{**cluster_kwargs, "shared_dir": str(blocker / "x")}, n_workers=1)
    assert platform.created() == []


def test_scale_and_adapt_refuse_what_would_start_unbounded_or_nonsense(
    platform, cluster_kwargs
) -> None:
    with CanfarCluster(**cluster_kwargs) as cluster:
        with pytest.raises(SpecError, match=r"^maximum=None is not allowed: a whole number"):
            cluster.adapt(minimum=1)
        with pytest.raises(SpecError, match=r"^maximum=1 is not allowed: at least minimum=2\."):
            cluster.adapt(minimum=2, maximum=1)
        with pytest.raises(SpecError, match=r"^n='3' is not allowed: a whole number of workers"):
            cluster.scale("3")
        assert listed(platform) == []
    assert platform.created() == []


def test_a_refused_create_fails_the_cluster_and_leaves_no_session(platform, cluster_kwargs) -> None:
    from canfar_core.errors import InvalidRequestError

    # One of the two workers' creates is refused (a fault the platform injects).
    platform.inject_fault(method="POST", route="/v1/session", status=400, count=1)
    with pytest.raises(InvalidRequestError):
        CanfarCluster(**cluster_kwargs, n_workers=2)
    assert len(platform.created()) == 1, "the other worker's session was created ..."
    assert listed(platform) == [], "... and deleted when the cluster closed"


def test_a_shared_dir_sessions_cannot_see_is_refused(tmp_path, monkeypatch) -> None:
    # A real server (not this machine): its sessions see only /arc and /cavern. No
    # request is sent: the directory is refused first.
    monkeypatch.setenv("CANFAR_URL", "https://ws-uv.canfar.net/skaha/v1")
    monkeypatch.setenv("CANFAR_TOKEN", "not-used")
    with pytest.raises(SpecError, match=r"^shared_dir='.*' is not allowed: a directory the "):
        CanfarCluster(image="images.canfar.net/x/y:1", shared_dir=str(tmp_path / "s"))

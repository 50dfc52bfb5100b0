"""What to submit: the checks that need the server, then one spec for every replica.

Sizes are rounded up to the smallest value the server offers (`Context.smallest_allowed`,
the rule both plugins use) and the rounding is said on stderr, never done silently; a
request above every option, or an image from a registry the server refuses, is a
refusal naming the option before anything is submitted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from canfar_core.allowed import fit
from canfar_core.client import AsyncCanfarClient
from canfar_core.config import CanfarConfig
from canfar_core.context import Context
from canfar_core.errors import SpecError
from canfar_core.launch import envelope
from canfar_core.local import LOCAL_IMAGE, on_shared_filesystem, runs_on_this_machine
from canfar_core.models import SessionSpec
from canfar_core.names import sanitize, unique_name
from canfar_core.run.options import PROG, RunOptions, UsageError, max_stem_length

_OPTION = {"image": "--image", "cores": "--cores", "ram": "--ram", "gpus": "--gpus"}


@dataclass(frozen=True)
class Plan:
    """One validated spec for all replicas, and how to name each attempt."""

    spec: SessionSpec
    stem: str
    replicas: int
    state_dir: str | None

    def new_name(self) -> str:
        """A fresh session name (replicas add `-<i>`); `spec.name` is the first one.

        Every name gets a new random suffix: the client adopts a session by its name
        after a lost answer, which is only safe when no other session has that name.
        """
        return unique_name(self.stem, max_length=max_stem_length(self.replicas) + 7)

    def spec_for(self, name: str) -> SessionSpec:
        """The spec under one attempt's name."""
        return self.spec.with_name(name)


async def make_plan(
    client: AsyncCanfarClient,
    options: RunOptions,
    config: CanfarConfig,
    say: Callable[[str], None],
    *,
    cwd: Path | None = None,
) -> Plan:
    """Check the request against the server and build the spec (raises UsageError)."""
    local = runs_on_this_machine(config)
    image = options.image or (LOCAL_IMAGE if local else None)
    if image is None:
        raise UsageError(
            "--image is required: the container image to run, e.g. "
            "images.canfar.net/<project>/<name>:<tag>."
        )
    context = await client.context()
    sizes = {
        resource: _round_up(context, resource, getattr(options, resource), say)
        for resource in ("cores", "ram", "gpus")
    }
    stem = options.name or sanitize(os.path.basename(options.command[0]), fallback="run")
    try:
        job = envelope(
            list(options.command),
            env=options.env,
            workdir=options.workdir or default_workdir(local, cwd or Path.cwd()),
            state_dir=options.state_dir,
            timeout=options.timeout,
        )
        first_name = unique_name(stem, max_length=max_stem_length(options.replicas) + 7)
        spec = job.spec(name=first_name, image=image, **sizes)
        await client.validate(spec)
    except SpecError as exc:
        raise UsageError(_reworded(exc)) from None
    return Plan(
        spec=spec,
        stem=stem,
        replicas=options.replicas,
        state_dir=str(options.state_dir) if options.state_dir else None,
    )


def default_workdir(local: bool, cwd: Path) -> str | None:
    """The current directory when sessions can see it (as srun does), else None.

    None leaves the session in its `$HOME`. Sessions see this directory when they run
    on this machine, or when it is on CANFAR's shared filesystem.
    """
    if local or on_shared_filesystem(cwd):
        return str(cwd)
    return None


def _round_up(
    context: Context, resource: str, wanted: float | None, say: Callable[[str], None]
) -> int | None:
    """The allowed value for `wanted`, by the rule every engine uses (`allowed.fit`)."""
    if wanted is None:
        return None
    try:
        fitted = fit(context, resource, wanted, field=_OPTION[resource])
    except SpecError as exc:
        raise UsageError(_reworded(exc)) from None
    if fitted.note:
        say(f"{PROG}: {_OPTION[resource]}: {fitted.note}.")
    return fitted.value


def _reworded(exc: SpecError) -> str:
    """The client's sentence, naming the option the user typed."""
    field = _OPTION.get(exc.field, exc.field)
    return str(SpecError(field, exc.value, exc.allowed))

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
from urllib.parse import urlsplit

from canfar_core.client import AsyncCanfarClient
from canfar_core.config import CanfarConfig
from canfar_core.context import Context
from canfar_core.errors import SpecError
from canfar_core.launch import envelope
from canfar_core.models import SessionSpec
from canfar_core.names import sanitize, unique_name
from canfar_core.run.options import PROG, RunOptions, UsageError, max_stem_length

# The image the snakemake plugin also uses when the server runs on this machine, where
# the host stands in for the image's contents.
LOCAL_DEFAULT_IMAGE = "images.canfar.net/skaha/base:latest"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Where CANFAR mounts its shared filesystem: a directory there is one sessions see too.
SHARED_ROOTS = ("/arc/", "/cavern/")
_OPTION = {"image": "--image", "cores": "--cores", "ram": "--ram", "gpus": "--gpus"}
_UNITS = {"cores": "", "ram": " GiB", "gpus": ""}


def on_this_machine(config: CanfarConfig) -> bool:
    """True for the embedded platform, in-process or on a loopback URL: its sessions
    run here, so they see this filesystem."""
    return config.is_local or (urlsplit(config.url).hostname or "") in LOOPBACK_HOSTS


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
    local = on_this_machine(config)
    image = options.image or (LOCAL_DEFAULT_IMAGE if local else None)
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
    text = str(cwd)
    if local or text.startswith(SHARED_ROOTS) or text in ("/arc", "/cavern"):
        return text
    return None


def _round_up(
    context: Context, resource: str, wanted: float | None, say: Callable[[str], None]
) -> float | None:
    if wanted is None:
        return None
    option = _OPTION[resource]
    try:
        granted = context.smallest_allowed(resource, wanted, field=option)
    except SpecError as exc:
        raise UsageError(_reworded(exc)) from None
    if granted != wanted:
        unit = _UNITS[resource]
        say(
            f"{PROG}: {option}={wanted:g} is not one of the server's options; "
            f"using {granted}{unit}, the smallest allowed value above it."
        )
    return granted


def _reworded(exc: SpecError) -> str:
    """The client's sentence, naming the option the user typed."""
    field = _OPTION.get(exc.field, exc.field)
    return str(SpecError(field, exc.value, exc.allowed))

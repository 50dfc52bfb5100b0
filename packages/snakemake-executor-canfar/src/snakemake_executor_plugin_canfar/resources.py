"""Translate a Snakemake job's resources into what a CANFAR session may request.

Precedence, most specific first: the rule's `canfar_*` resources; the rule's own
resources (`threads`, `mem_mb`, `gpu`, also when set by `--set-resources`); the
plugin's flags (`--canfar-ram`, ...); Snakemake's generated defaults
(`--default-resources`, which a profile often passes, gives every rule `mem_mb`);
the server's default request. Without the last distinction `--canfar-ram 16` would
be overruled by the generated `mem_mb=1000` and give 1 GiB sessions.

CANFAR accepts only discrete values from the server's `/context` options (cores as a
count, RAM in GiB). The rule is canfar-core's, the same for every engine
(`canfar_core.allowed.fit`): round *up* to the smallest allowed value and say so
(`SessionRequest.notes`); refuse a request above the largest option with a sentence
naming the rule, the value and the maximum, never clamp it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from canfar_core import Context, SessionResources, SpecError, fit

MIB_PER_GIB = 1024
BYTES_PER_MB = 1_000_000
BYTES_PER_GIB = 2**30
FALLBACK_RAM_GIB = 4  # canfar.net's default request, used if /context names none


class RequestError(ValueError):
    """A job's request cannot be satisfied; the message is one sentence for the user."""


# Plugin-wide defaults that a job's own resources override (the core's layering rule).
Defaults = SessionResources


@dataclass(frozen=True)
class SessionRequest:
    """What one session asks for."""

    image: str
    cores: int
    ram: int
    gpus: int | None
    runtime_minutes: float | None
    notes: tuple[str, ...] = ()

    @property
    def runtime_seconds(self) -> float | None:
        """The runtime limit in seconds, when the job declares one."""
        return None if self.runtime_minutes is None else self.runtime_minutes * 60.0


def _number(label: str, resource: str, value: object) -> float:
    if isinstance(value, bool):
        raise RequestError(f"{label}: {resource}={value!r} is not allowed: it must be a number.")
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise RequestError(
                f"{label}: {resource}={value!r} is not allowed: it must be a number."
            ) from None
    if not math.isfinite(number) or number < 0:
        raise RequestError(
            f"{label}: {resource}={value!r} is not allowed: it must be a non-negative number."
        )
    return number


def _smallest(
    context: Context, resource: str, want: float, label: str, what: str, notes: list[str]
) -> int:
    try:
        fitted = fit(context, resource, want)
    except SpecError as exc:
        raise RequestError(
            f"{label} requests {what}, which is not allowed: {exc.allowed}."
        ) from None
    note = fitted.note_for(what)  # canfar-core's sentence, in the rule's words
    if note is not None:
        notes.append(f"{label}: {note}")
    return fitted.value


SIZED = ("mem", "disk")


def generated_defaults(rules: Iterable[object], defaults: Mapping[str, object]) -> frozenset[str]:
    """The names of a job's resources that are Snakemake's generated defaults.

    A rule starts from a copy of the default resources and then takes its own; a
    resource still equal to the default's (Snakemake's `Resource` compares values, and
    a default's evaluator survives the copy) for every rule of the job was not asked
    for by the rule. Sized resources count under all their names (`mem`, `mem_mb`,
    `mem_mib`), as the job's evaluated resources carry all three.
    """
    names: set[str] = set()
    for name, default in defaults.items():
        if all(_resource(rule, name) == default for rule in rules):
            base = name.split("_")[0]
            names.update({base, f"{base}_mb", f"{base}_mib"} if base in SIZED else {name})
    return frozenset(names)


def _resource(rule: object, name: str) -> object:
    resources = getattr(rule, "resources", None) or {}
    return resources.get(name) if hasattr(resources, "get") else None


def plan_request(
    *,
    label: str,
    threads: int,
    resources: Mapping[str, object],
    defaults: Defaults,
    context: Context,
    generated: frozenset[str] = frozenset(),
) -> SessionRequest:
    """The session request for a job.

    `label` names the job for messages ("rule align" or "group foo"); `resources` is
    the job's evaluated resources (attempt-dependent callables are already applied);
    `generated` names those that are only Snakemake's defaults (see `generated_defaults`),
    which the plugin's flags override.
    """
    image = resources.get("canfar_image") or defaults.image
    if not image:
        raise RequestError(
            f"{label} has no container image: set --canfar-image or the rule's "
            "canfar_image resource to an image such as images.canfar.net/<project>/<name>:<tag>."
        )
    image = str(image)
    notes: list[str] = []

    if "canfar_cores" in resources:
        want = _number(label, "canfar_cores", resources["canfar_cores"])
        cores = _smallest(context, "cores", want, label, f"canfar_cores={want:g}", notes)
    else:
        want = max(int(threads or 1), defaults.cores or 1)
        cores = _smallest(context, "cores", want, label, f"threads={want} (cores)", notes)

    ram = _plan_ram(label, resources, defaults, context, notes, generated)

    gpus: int | None = None
    for key in ("canfar_gpus", "gpu"):
        if key in resources and resources[key] is not None:
            want_gpus = _number(label, key, resources[key])
            if want_gpus > 0:
                gpus = _smallest(context, "gpus", want_gpus, label, f"{key}={want_gpus:g}", notes)
            break
    else:
        if defaults.gpus:
            gpus = _smallest(
                context, "gpus", defaults.gpus, label, f"--canfar-gpus={defaults.gpus}", notes
            )

    runtime = resources.get("runtime")
    runtime_minutes: float | None = None
    if runtime is not None and not isinstance(runtime, str):
        minutes = _number(label, "runtime", runtime)
        runtime_minutes = minutes if minutes > 0 else None

    return SessionRequest(
        image=image,
        cores=cores,
        ram=ram,
        gpus=gpus,
        runtime_minutes=runtime_minutes,
        notes=tuple(notes),
    )


def _plan_ram(
    label: str,
    resources: Mapping[str, object],
    defaults: Defaults,
    context: Context,
    notes: list[str],
    generated: frozenset[str] = frozenset(),
) -> int:
    if "canfar_ram" in resources:
        want = _number(label, "canfar_ram", resources["canfar_ram"])
        return _smallest(context, "ram", want, label, f"canfar_ram={want:g} GiB", notes)
    mem_mb, mem_mib = resources.get("mem_mb"), resources.get("mem_mib")
    declared = mem_mb is not None or mem_mib is not None
    if declared and defaults.ram and {"mem_mb", "mem_mib"} & generated:
        declared = False  # Snakemake's generated default: --canfar-ram beats it
    if declared:
        # Snakemake fills in both; mem_mib is exact in binary units, mem_mb is what
        # users usually wrote, so compute from the first and show the second.
        if mem_mib is not None:
            gib = _number(label, "mem_mib", mem_mib) / MIB_PER_GIB
        else:
            gib = _number(label, "mem_mb", mem_mb) * BYTES_PER_MB / BYTES_PER_GIB
        shown = f"mem_mb={mem_mb}" if mem_mb is not None else f"mem_mib={mem_mib}"
        return _smallest(context, "ram", gib, label, f"{shown} ({gib:.1f} GiB)", notes)
    if defaults.ram:
        return _smallest(context, "ram", defaults.ram, label, f"--canfar-ram={defaults.ram}", notes)
    server_default = context.memory_gb.default or context.memory_gb.default_request
    want = server_default or FALLBACK_RAM_GIB
    return _smallest(context, "ram", want, label, f"the default ram of {want:g} GiB", notes)

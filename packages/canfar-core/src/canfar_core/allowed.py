"""Fitting a request to what the server allows: its registries and resource options.

Every engine asks for resources in its own terms (threads and mem_mb, a work pool's
`cores`, a task's `canfar_options`), and CANFAR accepts only the discrete values its
`/context` lists. The rule is the same everywhere, so it lives here: round a request
*up* to the smallest allowed value and say so; refuse a request above the largest
option with one sentence, never clamp it (a clamped job runs out of memory or threads
far from where the mistake was made). Images must come from one of the registries
`/repository` lists (the server's check is a prefix match, reference §3.1.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from canfar_core.context import Context
from canfar_core.errors import SpecError


@dataclass(frozen=True)
class Fitted:
    """A resource request and the allowed value it was fitted to."""

    resource: str
    requested: float
    value: int

    @property
    def raised(self) -> bool:
        """True when the request was raised beyond the whole number it rounds up to.

        2.9 GiB becoming 3 GiB is only a unit's rounding and not worth a line; 3 cores
        becoming 4 on a server offering 1, 2, 4, 8 is a decision the user should see.
        """
        return self.value > max(1, math.ceil(self.requested))

    @property
    def note(self) -> str | None:
        """The sentence that tells the user a request was raised, or None."""
        return self.note_for(f"{self.resource} {self.requested:g}")

    def note_for(self, asked: str) -> str | None:
        """The same sentence, naming the request in the engine's words (`asked`).

        Snakemake says what the rule wrote (`threads=3 (cores)`, `mem_mb=9000 (8.4 GiB)`);
        the rest of the sentence is this one, so a change here changes every engine.
        """
        if not self.raised:
            return None
        return f"{asked} raised to {self.value}, the smallest value the server allows"


def fit(context: Context, resource: str, requested: float, *, field: str | None = None) -> Fitted:
    """Fit `requested` cores, GiB of RAM or GPUs to the smallest allowed value >= it.

    A request below 1 counts as 1 (the smallest anything can be). Raises SpecError
    naming `field` (default: the resource) when the request is above every option.
    """
    value = context.smallest_allowed(resource, max(float(requested), 1.0), field=field)
    return Fitted(resource, float(requested), value)


def registry_problem(image: str, registries: Sequence[str]) -> str | None:
    """What is wrong with `image`'s registry, or None when the server will accept it."""
    if not registries or any(image.startswith(host) for host in registries):
        return None
    return f"images must come from {', '.join(registries)}"


def check_registry(image: str, registries: Sequence[str], *, field: str = "image") -> None:
    """Raise SpecError naming `field` when `image` is not from an allowed registry."""
    problem = registry_problem(image, registries)
    if problem is not None:
        raise SpecError(field, image, problem)

"""What a session asks for before it is fitted to the server: cores, RAM, GPUs, image.

Each engine collects these from its own places (Snakemake: plugin flags under a rule's
resources; Prefect: `canfar_options` over the task runner's defaults), and both layer
them the same way: a value that is set wins, an unset one (None) comes from the layer
below. Fitting the values to the server's options is `canfar_core.allowed.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class SessionResources:
    """Resources and image of a session; None means "not set at this layer"."""

    cores: float | None = None
    ram: float | None = None
    gpus: int | None = None
    image: str | None = None

    def over(self, base: SessionResources) -> SessionResources:
        """These values, with the unset ones taken from `base`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(base, **{k: v for k, v in values.items() if v is not None})

"""Blocks that say where CANFAR is and who the worker acts as.

Both are optional: without `credentials` the worker uses its own CANFAR login, resolved as
canfar-core does (`CANFAR_URL` / `CANFAR_TOKEN` / `CANFAR_CERTIFICATE`, then the official
client's `~/.canfar/config.yaml`, then `~/.ssl/cadcproxy.pem`). Secrets are `SecretStr`,
so Prefect stores them encrypted and the UI masks them.
"""

from __future__ import annotations

from pathlib import Path

from canfar_core import CanfarConfig, resolve_config
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

# The package README: what the worker, its job variables and these blocks do.
DOCS_URL = "https://github.com/canfar-workflows/canfar-workflows/blob/main/packages/prefect-canfar/README.md"


class CanfarCredentials(Block):
    """Where the CANFAR Skaha API is and how to authenticate to it.

    Give a bearer `token` or the path of an X.509 proxy `certificate` (as written by
    `canfar login` or `cadc-get-cert`), not both; with neither, the worker's own CANFAR
    login is used for the given `url`.

    Example:
        ```python
        from prefect_canfar import CanfarCredentials

        credentials = CanfarCredentials.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "CANFAR Credentials"
    _block_type_slug = "canfar-credentials"
    _documentation_url = DOCS_URL

    url: str | None = Field(
        default=None,
        title="Server URL",
        description="The Skaha API URL, e.g. https://ws-uv.canfar.net/skaha/v1, or `local` "
        "for the embedded platform; empty means the worker's own configuration.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="A CANFAR bearer access token.",
    )
    certificate: str | None = Field(
        default=None,
        title="Certificate path",
        description="The path, on the worker's machine, of a PEM proxy certificate "
        "(for example ~/.ssl/cadcproxy.pem).",
    )

    @model_validator(mode="after")
    def _one_credential(self) -> CanfarCredentials:
        if self.token is not None and self.certificate:
            raise ValueError(
                "CanfarCredentials takes a token or a certificate path, not both: "
                "remove one of them."
            )
        return self

    def resolve(self, url: str | None = None) -> CanfarConfig:
        """The canfar-core configuration these credentials describe (`url` overrides).

        Messages about the token or certificate (expired, missing, refused) name this
        block as their source, which is where the user has to fix them.
        """
        certificate = Path(self.certificate).expanduser() if self.certificate else None
        name = self._block_document_name
        source = f"the CANFAR Credentials block {name!r}" if name else "the CANFAR credentials"
        return resolve_config(url or self.url, self.token, certificate, source=source)


class CanfarRegistryCredentials(Block):
    """Credentials of the image registry (Harbor) for private CANFAR images.

    Sent as the `x-skaha-registry-auth` header when a session is created; the server
    uses them to pull the image.

    Example:
        ```python
        from prefect_canfar import CanfarRegistryCredentials

        registry = CanfarRegistryCredentials.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "CANFAR Registry Credentials"
    _block_type_slug = "canfar-registry-credentials"
    _documentation_url = DOCS_URL

    username: str = Field(description="The registry user name.")
    secret: SecretStr = Field(description="The registry secret (CLI secret or password).")

    def as_tuple(self) -> tuple[str, SecretStr]:
        """`(username, secret)` as `AsyncCanfarClient(registry_auth=...)` takes it."""
        return self.username, self.secret

"""TLS credentials made for one cluster, and how they reach its sessions.

A Dask scheduler runs whatever a connected client sends it, so on a network shared by
every CANFAR session an open scheduler runs anyone's code. Each cluster therefore makes
its own key and self-signed certificate (`distributed.Security.temporary`), which is also
the only CA its members trust, with mutual TLS: a peer without the cluster's certificate
cannot complete the handshake.

The credentials never travel in a session request (the server keeps `env` in the Job
spec, readable by anyone who can read the Job) nor on a command line. Each session gets
them in a 0600 file on the shared filesystem (`canfar_core.launch.write_secrets_file`),
which the launch envelope sources and deletes before the worker starts; they become Dask
configuration variables (`DASK_DISTRIBUTED__COMM__TLS__...`), which `dask worker` and
`dask scheduler` read as in-memory PEM text.
"""

from __future__ import annotations

from pathlib import Path

from distributed.security import Security

from canfar_core.launch import write_secrets_file

_PREFIX = "DASK_DISTRIBUTED__COMM__"


def cluster_security() -> Security:
    """A new key and certificate for one cluster, encryption required."""
    return Security.temporary()  # require_encryption=True, by construction


def role_environment(security: Security, role: str) -> dict[str, str]:
    """The Dask configuration variables that give a process `role`'s credentials."""
    tls = security.get_tls_config_for_role(role)
    if not (tls.get("ca_file") and tls.get("cert") and tls.get("key")):
        raise ValueError(f"the cluster's security has no {role} credentials")
    return {
        f"{_PREFIX}REQUIRE_ENCRYPTION": "True",
        f"{_PREFIX}TLS__CA_FILE": str(tls["ca_file"]),
        f"{_PREFIX}TLS__{role.upper()}__CERT": str(tls["cert"]),
        f"{_PREFIX}TLS__{role.upper()}__KEY": str(tls["key"]),
    }


def write_role_file(path: Path, security: Security, role: str) -> Path:
    """Write `role`'s credentials to a new 0600 file for one session to consume."""
    return write_secrets_file(path, role_environment(security, role))

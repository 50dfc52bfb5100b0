"""Prefect integration for CANFAR: run flow runs as CANFAR headless sessions.

Importing this package registers the `canfar` worker type (Prefect imports it through
the `prefect.collections` entry point on every CLI call, so it stays light).
"""

from prefect_canfar.credentials import CanfarCredentials, CanfarRegistryCredentials
from prefect_canfar.options import canfar_options
from prefect_canfar.task_runner import CanfarTaskRunner
from prefect_canfar.worker import CanfarWorker, CanfarWorkerResult

__all__ = [
    "CanfarCredentials",
    "CanfarRegistryCredentials",
    "CanfarTaskRunner",
    "CanfarWorker",
    "CanfarWorkerResult",
    "canfar_options",
]

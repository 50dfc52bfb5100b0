"""Worker-wide knobs, read from `PREFECT_INTEGRATIONS_CANFAR_*` environment variables.

These are properties of the worker process, not of one flow run: every run of a worker
shares one session tracker, so its polling interval cannot be a job variable. They are
Prefect settings so that `prefect.toml` and `.env` files work as for Prefect's own.
"""

from __future__ import annotations

from prefect.settings.base import PrefectBaseSettings, build_settings_config
from pydantic import Field


class CanfarWorkerSettings(PrefectBaseSettings):
    """Settings of the CANFAR worker (env prefix `PREFECT_INTEGRATIONS_CANFAR_`)."""

    model_config = build_settings_config(("integrations", "canfar"))

    poll_min_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Shortest interval between two session-list requests, used while "
        "sessions change phase.",
    )
    poll_max_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Longest interval between two session-list requests, reached while "
        "nothing changes.",
    )
    outage_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long the CANFAR session list may stay unreadable before the "
        "worker gives up on the runs it watches (they are then reported with status -1).",
    )
    log_tail_lines: int = Field(
        default=200,
        ge=0,
        description="Lines of a crashed session's output copied into the flow run's logs.",
    )
    stream_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often `stream_output` reads new session output.",
    )
    # As often as Prefect's own worker polls for scheduled runs (PREFECT_WORKER_QUERY_SECONDS):
    # this tick is also how a running flow run's cancellation reaches its session.
    adopt_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often the worker looks for flow runs whose CANFAR session no "
        "live worker watches (to adopt them) and for cancelled runs it watches.",
    )
    lease_settle_seconds: float = Field(
        default=4.0,
        gt=0,
        description="How long a worker claiming a flow run waits before reading the "
        "claim back; the claim's write must finish within half of it.",
    )
    image_pull_timeout_seconds: float = Field(
        default=180.0,
        gt=0,
        description="How long a session's image may keep failing to pull (ErrImagePull, "
        "ImagePullBackOff: a mistyped tag) before the session is deleted and its flow run "
        "Crashed with the session's events (status 125), long before "
        "pending_timeout_seconds. A worker setting: one tracker watches every run.",
    )
    heartbeat_seconds: float = Field(
        default=900.0,
        ge=0,
        description="How often a flow run's log says that its CANFAR session is still "
        "Pending or Running (0: never).",
    )

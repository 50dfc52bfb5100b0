"""The job configuration a `canfar` worker receives for one flow run, and its session.

`CanfarWorkerJobConfiguration` is what Prefect builds from the pool's template and the
deployment's and flow run's job variables. `session_request()` turns it into what the
Skaha API is sent: every value that the API would mangle (the command, environment
values with `=` or quotes) travels inside canfar-core's launch envelope, never as a
plain `env` entry, and never in the session name. The Prefect API key travels in a 0600
file under `state_dir` that the session deletes once read, when a `state_dir` is set;
otherwise (the worker shares no filesystem with the sessions) inside the envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canfar_core import Context, Envelope, SessionSpec, envelope, fit, runtime_backstop, unique_name
from prefect.workers.base import BaseJobConfiguration
from pydantic import Field

from prefect_canfar.credentials import CanfarCredentials, CanfarRegistryCredentials
from prefect_canfar.variables import DEFAULT_PENDING_TIMEOUT_SECONDS, check_variable_names

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

DEFAULT_NAME_PREFIX = "prefect"
ENGINE_COMMAND = "python -m prefect.engine"
# Settings that authenticate to Prefect: with a state_dir they travel in a 0600 file.
SECRET_ENV_KEYS = ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")
SECRETS_SUBDIR = ".secrets"


@dataclass(frozen=True)
class SessionRequest:
    """Everything needed to create and watch one session."""

    spec: SessionSpec
    envelope: Envelope
    pending_timeout: float | None
    runtime_limit: float | None
    adjustments: tuple[str, ...] = ()
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    secrets_file: Path | None = None
    secrets_in_env: tuple[str, ...] = ()


class CanfarWorkerJobConfiguration(BaseJobConfiguration):
    """The resolved configuration of one flow run's CANFAR session.

    Field descriptions live on `CanfarWorkerVariables`, the schema users see.
    """

    image: str | None = Field(default=None)
    cores: int = Field(default=1, ge=1)
    ram: int = Field(default=4, ge=1)
    gpus: int | None = Field(default=None, ge=0)
    url: str | None = Field(default=None)
    credentials: CanfarCredentials | None = Field(default=None)
    registry_credentials: CanfarRegistryCredentials | None = Field(default=None)
    pending_timeout_seconds: int | None = Field(default=DEFAULT_PENDING_TIMEOUT_SECONDS, gt=0)
    job_timeout_seconds: int | None = Field(default=None, gt=0)
    stream_output: bool = Field(default=False)
    delete_session_on_completion: bool = Field(default=False)
    state_dir: str | None = Field(default=None)

    @classmethod
    async def from_template_and_values(
        cls,
        base_job_template: dict[str, Any],
        values: dict[str, Any],
        client: PrefectClient | None = None,
    ) -> CanfarWorkerJobConfiguration:
        """Build the configuration, first refusing job variables the pool does not know.

        Prefect itself ignores unknown names, so `memory=8` would quietly run with the
        default RAM; here it fails the submission with the list of known names.
        """
        known = (base_job_template.get("variables") or {}).get("properties") or {}
        check_variable_names(values, known)
        return await super().from_template_and_values(base_job_template, values, client=client)

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: Flow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: Any = None,
    ) -> None:
        """Prefect's preparation (environment, labels, name template, command).

        The default name is `prefect-<flow run name>` so that sessions started by
        Prefect are recognisable in `canfar ps`.
        """
        if not self.name:
            self.name = f"{DEFAULT_NAME_PREFIX}-{flow_run.name}"
        super().prepare_for_flow_run(
            flow_run,
            deployment=deployment,
            flow=flow,
            work_pool=work_pool,
            worker_name=worker_name,
            worker_id=worker_id,
        )

    @staticmethod
    def _base_flow_run_command() -> str:
        """The engine alone, in one interpreter, as Prefect's process worker runs it.

        Prefect's default, `prefect flow-run execute`, starts the CLI and then the
        engine in a second interpreter (about 2.5x the CPU per run); what its
        supervisor adds is done here by the worker: cancellation (the worker deletes
        the session of a Cancelling run) and crash reporting (the session's exit
        code). `PREFECT__FLOW_RUN_ID` names the run; the image needs `python` on PATH
        with prefect installed (set the job variable `command` otherwise).
        """
        return ENGINE_COMMAND

    def session_request(self, context: Context | None = None) -> SessionRequest:
        """The session to create: name, image, resources and the launch envelope.

        With the server's `context`, each resource is raised to the smallest value the
        server allows at or above the request (servers with fixed options offer, say,
        1, 2, 4, 8 cores), and each change is noted in `adjustments` for the run's log.
        Raises SpecError or ValueError (one sentence naming the field) for bad values.
        """
        if not self.image or not self.image.strip():
            raise ValueError(
                "The job variable 'image' is not set: set it on the work pool, the "
                "deployment (flow.deploy(image=...)) or the flow run, to a CANFAR image "
                "with Python and prefect installed, e.g. "
                "images.canfar.net/<project>/<name>:<tag>."
            )
        env = {key: value for key, value in self.env.items() if value is not None}
        name = unique_name(self.name or DEFAULT_NAME_PREFIX)
        secrets: dict[str, str] = {}
        secrets_file = None
        if self.state_dir:
            secrets = {key: env.pop(key) for key in SECRET_ENV_KEYS if key in env}
            if secrets:
                secrets_file = Path(self.state_dir) / SECRETS_SUBDIR / f"{name}.sh"
        job = envelope(
            self.command or self._base_flow_run_command(),
            env=env,
            state_dir=self.state_dir,
            timeout=self.job_timeout_seconds,
            secrets_file=secrets_file,
        )
        sizes: dict[str, int | None] = {
            "cores": self.cores,
            "ram": self.ram,
            "gpus": self.gpus or None,
        }
        adjustments = []
        if context is not None:
            for resource, wanted in sizes.items():
                if wanted is None:
                    continue
                fitted = fit(context, resource, wanted)
                if fitted.note is not None:
                    adjustments.append(fitted.note)
                sizes[resource] = fitted.value
        spec = job.spec(
            name=name,
            image=self.image.strip(),
            cores=sizes["cores"],
            ram=sizes["ram"],
            gpus=sizes["gpus"],
        )
        return SessionRequest(
            spec,
            job,
            self.pending_timeout_seconds,
            runtime_backstop(self.job_timeout_seconds),
            tuple(adjustments),
            secrets=secrets,
            secrets_file=secrets_file,
            secrets_in_env=tuple(key for key in SECRET_ENV_KEYS if key in env),
        )

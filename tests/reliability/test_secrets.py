"""Secrets stay secret (issue 9, item 5).

With a CANFAR token, a registry secret, a workflow secret (`envvars:`) and a Prefect API
key all set, none of them may appear in any log file, the platform's request log or
records, a session's name, the command line of any process, the script a session runs,
or an error message. Every process's command line is sampled while the work runs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from canfar_core.launch import SCRIPT_VAR_PREFIX
from canfar_local import LocalPlatform
from prefect import flow
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect_canfar import CanfarRegistryCredentials

from tests.prefect.conftest import PrefectServer, create_pool, final_flow_run, running_worker

PRIVATE_IMAGE = "images.canfar.net/team/private-pipeline:2.1"
PUBLIC_IMAGE = "images.canfar.net/skaha/astroml:latest"
REGISTRY_SECRET = "harbor-cli-SECRET-7f3a9c"
WORKFLOW_SECRET = "survey-db-SECRET-2b81e4 with 'quotes' and = signs"
API_KEY = "pnu_SECRET0prefect0api0key0d41d8cd98f"
WRONG_TOKEN = "wrong-SECRET-token-0c4f1b"
FLOWS = Path(__file__).parent / "flows"


class CommandLines:
    """Every distinct process command line seen while it runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        self.seen.add(Path(f"/proc/{entry}/cmdline").read_bytes())
                    except OSError:
                        continue

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def containing(self, secret: str) -> list[str]:
        return [c.decode(errors="replace") for c in self.seen if secret.encode() in c]


def forms(secret: str) -> list[bytes]:
    """The secret, and the secret as base64 (all three alignments), as bytes to search."""
    raw = secret.encode()
    found = [raw]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)[4 * ((shift + 2) // 3) :]
        found.append(encoded[:-4])
    return found


def files_containing(root: Path, secret: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Files under `root` holding the secret (or its base64), except names in `skip`."""
    hits = []
    for path in root.rglob("*"):
        if not path.is_file() or path.name in skip:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(form in data for form in forms(secret)):
            hits.append(str(path))
    return hits


def launch_script(platform: LocalPlatform, session_id: str) -> str:
    """The script a session runs, decoded from its environment."""
    env = platform.session_state(session_id)["env"]  # type: ignore[index]
    chunks = sorted((k for k in env if k.startswith(SCRIPT_VAR_PREFIX)), key=lambda k: int(k[14:]))
    return base64.b64decode("".join(env[k] for k in chunks)).decode(errors="replace")


def check_everywhere(
    secrets: list[str], platform: LocalPlatform, places: list[Path], cmdlines: CommandLines
) -> None:
    for secret in secrets:
        assert cmdlines.containing(secret) == [], f"{secret!r} on a command line"
        for place in places:
            assert files_containing(place, secret) == [], f"{secret!r} in a file"
        # The platform's records: request log, creation journal, session store, job specs.
        # tokens.json is the server's own credential store, where the token must be.
        assert files_containing(platform.root, secret, skip=("tokens.json",)) == []
        for entry in platform.created():
            assert secret not in entry["name"]
            assert secret not in launch_script(platform, entry["id"])


@pytest.fixture
def private_platform(platform_factory: Callable[..., LocalPlatform]) -> LocalPlatform:
    """A platform where only PUBLIC_IMAGE is public: PRIVATE_IMAGE needs registry auth."""
    return platform_factory(public_images=(PUBLIC_IMAGE,))


def test_snakemake_keeps_token_registry_secret_and_envvars_out_of_everything(
    tmp_path: Path, private_platform: LocalPlatform
) -> None:
    platform = private_platform
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(
        'envvars: "SURVEY_DB_PASSWORD"\n\n'
        'rule all:\n    input: expand("digest/{i}.txt", i=range(3))\n\n'
        'rule digest:\n    output: "digest/{i}.txt"\n'
        f'    resources: canfar_image="{PRIVATE_IMAGE}"\n'
        '    shell: "printf %s \\"$SURVEY_DB_PASSWORD\\" | sha256sum | cut -c1-64 > {output}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANFAR_")}
    env.update(
        SNAKEMAKE_CANFAR_TOKEN=platform.token,
        SNAKEMAKE_CANFAR_REGISTRY_USERNAME="astro",
        SNAKEMAKE_CANFAR_REGISTRY_SECRET=REGISTRY_SECRET,
        SURVEY_DB_PASSWORD=WORKFLOW_SECRET,
    )
    argv = [
        sys.executable,
        *("-m", "snakemake", "--executor", "canfar", "--canfar-url", platform.url),
        *("--jobs", "3", "--seconds-between-status-checks", "1", "--canfar-keep-sessions"),
        *("--printshellcmds", "--verbose", "--show-failed-logs"),
    ]
    with CommandLines() as cmdlines:
        result = subprocess.run(
            argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
        )
        refused = subprocess.run(
            argv,
            cwd=workdir,
            env={**env, "SNAKEMAKE_CANFAR_TOKEN": WRONG_TOKEN},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    expected = hashlib.sha256(WORKFLOW_SECRET.encode()).hexdigest()
    for i in range(3):
        assert (workdir / "digest" / f"{i}.txt").read_text() == expected + "\n"
    assert not list((workdir / ".snakemake" / "canfar" / "secrets").glob("*.sh"))
    assert refused.returncode != 0 and "refused the credentials" in refused.stderr
    output = result.stdout + result.stderr + refused.stdout + refused.stderr
    for secret in (platform.token, REGISTRY_SECRET, WORKFLOW_SECRET, WRONG_TOKEN):
        assert not any(form.decode() in output for form in forms(secret))
    check_everywhere(
        [platform.token, REGISTRY_SECRET, WORKFLOW_SECRET, WRONG_TOKEN],
        platform,
        [workdir],
        cmdlines,
    )


@pytest.fixture
def registry_block(prefect_api: PrefectServer) -> Iterator[str]:
    """The registry secret saved as a block on the test session's Prefect server."""
    block_id = CanfarRegistryCredentials(username="astro", secret=REGISTRY_SECRET).save(
        "secrets-test-registry", overwrite=True
    )
    yield str(block_id)


def test_prefect_keeps_api_key_token_and_registry_secret_out_of_everything(
    prefect_api: PrefectServer,
    private_platform: LocalPlatform,
    registry_block: str,
    tmp_path: Path,
) -> None:
    platform = private_platform
    state_dir = tmp_path / "state"
    out = tmp_path / "out"
    out.mkdir()
    env = prefect_api.env(
        PREFECT_API_KEY=API_KEY,
        PREFECT_LOGGING_LEVEL="DEBUG",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MIN_SECONDS="0.5",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MAX_SECONDS="1",
        CANFAR_URL=platform.url,
        CANFAR_TOKEN=platform.token,
    )
    create_pool(env, "canfar-secrets")
    source = flow.from_source(source=str(FLOWS), entrypoint="reliable_flows.py:key_digest")
    deployment = source.deploy(  # type: ignore[union-attr]
        name="secrets",
        work_pool_name="canfar-secrets",
        image=PRIVATE_IMAGE,
        build=False,
        push=False,
        print_next_steps=False,
        job_variables={
            "state_dir": str(state_dir),
            "stream_output": True,
            "registry_credentials": {"$ref": {"block_document_id": registry_block}},
        },
    )
    log = tmp_path / "worker.log"
    with (
        CommandLines() as cmdlines,
        running_worker(env, "canfar-secrets", "secrets", log) as worker,
    ):
        run = run_deployment(deployment, parameters={"out_dir": str(out)}, timeout=0)
        done = final_flow_run(run.id, timeout=180)  # type: ignore[union-attr]
        # Tracebacks are looked for while the worker runs: as it stops, Prefect's own
        # worker-channel task may log one (see test_faults_prefect.py). Secrets are
        # looked for in everything it printed, its shutdown included.
        running_output = worker.output()
    assert done.state is not None and done.state.type == StateType.COMPLETED, done.state
    assert (out / "key.txt").read_text() == hashlib.sha256(API_KEY.encode()).hexdigest()
    assert not list((state_dir / ".secrets").glob("*")), "the session deletes the key file"
    output = worker.output()
    assert "Traceback" not in running_output, running_output[-5000:]
    for secret in (API_KEY, platform.token, REGISTRY_SECRET):
        assert not any(form.decode() in output for form in forms(secret))
    check_everywhere(
        [API_KEY, platform.token, REGISTRY_SECRET],
        platform,
        [state_dir, prefect_api.home / "server.log"],
        cmdlines,
    )

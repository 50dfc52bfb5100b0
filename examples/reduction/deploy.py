"""Deploy the whole reduction flow to a `canfar` work pool: the flow run is a session too.

    prefect work-pool create --type canfar canfar-pool
    python deploy.py --pool canfar-pool --image images.canfar.net/<project>/<image>:<tag>
    prefect worker start --pool canfar-pool          # on any machine that reaches CANFAR
    prefect deployment run ccd-reduction/nightly

The worker runs each flow run as a headless session (sized by the pool's job variables);
inside it, `CanfarTaskRunner` gives every per-frame step its own session.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", default="canfar-pool")
    parser.add_argument("--image", required=True)
    parser.add_argument("--name", default="nightly")
    parser.add_argument("--frames", type=int, default=6)
    args = parser.parse_args()
    deployment = flow.from_source(source=str(HERE), entrypoint="flow.py:reduce_night")
    deployment_id = deployment.deploy(
        name=args.name,
        work_pool_name=args.pool,
        image=args.image,
        build=False,
        push=False,
        parameters={"frames": args.frames, "out": str(HERE / "reduction-output")},
        job_variables={"cores": 2, "ram": 4},
    )
    print(f"deployment {deployment_id}: prefect deployment run ccd-reduction/{args.name}")


if __name__ == "__main__":
    main()

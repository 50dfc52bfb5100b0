"""Dask clusters whose workers are CANFAR headless sessions (the `dask` extra).

    from canfar_core.dask import CanfarCluster
    from distributed import Client

    with CanfarCluster(image="images.canfar.net/<project>/<image>:<tag>", cores=2, ram=8,
                       n_workers=4) as cluster, Client(cluster) as client:
        print(client.submit(sum, [1, 2, 3]).result())

This package imports `distributed`; `import canfar_core` does not import this package,
so users who never make a cluster never pay for (or need) Dask.
"""

from __future__ import annotations

try:
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "canfar_core.dask needs Dask's distributed scheduler, which is not installed: "
        "install it with `pip install 'canfar-core[dask]'`."
    ) from exc

from canfar_core.dask.cluster import CanfarCluster
from canfar_core.dask.worker import CanfarWorker

__all__ = ["CanfarCluster", "CanfarWorker"]

"""`GET /metrics`: the process's series in Prometheus text (no authentication)."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from app.services.ops_metrics import ClusterMetrics


def _exposition() -> Response[bytes]:
    return Response(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


class MetricsController(Controller):
    """Prometheus text exposition of this process's series (a scorer's)."""

    path = "/metrics"
    include_in_schema = False

    @get(operation_id="processMetrics", sync_to_thread=False)
    def metrics(self) -> Response[bytes]:
        """This process's series."""
        return _exposition()


class ApiMetricsController(Controller):
    """The API's: this process's series and the cluster's gauges, read at each scrape."""

    path = "/metrics"
    include_in_schema = False

    @get(operation_id="metrics")
    async def metrics(self, cluster: NamedDependency[ClusterMetrics]) -> Response[bytes]:
        """Refresh the cluster gauges (a bounded wait), then expose every series."""
        await cluster.refresh()
        return _exposition()

"""Open performance and data-quality alerts of what serves: those after the latest check of
their kind for their version and environment, read per serving version from the model's
stream (not by grouping every check the log holds)."""

from __future__ import annotations

from app.resources import Resources
from app.services.monitoring import Monitoring
from domain import events as ev
from domain.decide import model_stream

WORKER = ev.EventMeta(actor="worker:monitor", role="admin")


def checked(kind: str, version: int, environment: str = "production") -> ev.Event:
    where = {"name": "fraud", "version": version, "environment": environment, "rows": 50}
    if kind == "performance":
        return ev.PerformanceChecked(severity="info", window_days=7, task="binary", **where)
    return ev.DataQualityChecked(severity="info", **where)


def alert(kind: str, version: int, what: str, environment: str = "production") -> ev.Event:
    where = {"name": "fraud", "version": version, "environment": environment, "rows": 50}
    limits = {"value": 0.5, "baseline": 0.8, "threshold": 0.1, "severity": "warning", "reason": ""}
    if kind == "performance":
        return ev.PerformanceAlert(metric=what, **limits, **where)
    return ev.DataQualityAlert(check=what, **limits, **where)


async def test_open_alerts_are_those_after_the_latest_check_of_their_kind(
    resources: Resources,
) -> None:
    history = [
        checked("performance", 1),
        alert("performance", 1, "closed"),  # a later performance check of v1 closes it
        checked("data_quality", 1),
        alert("data_quality", 1, "null_rate"),  # open: no data-quality check after it
        checked("performance", 1),
        alert("performance", 1, "auc"),  # open: after v1's latest performance check
        checked("performance", 2),
        alert("performance", 2, "v2"),  # open, but v2 is not asked about
        checked("performance", 1, "staging"),  # another environment closes nothing here
        alert("performance", 1, "staging", "staging"),
        *(checked("performance", 3) for _ in range(5)),  # v3 serves, checked, no alert
    ]
    await resources.store.append(model_stream("fraud"), history, meta=WORKER, expected_version=None)
    monitoring = Monitoring(resources.pool)
    serving = [("fraud", 1, "production"), ("fraud", 3, "production"), ("fraud", 4, "staging")]
    found = await monitoring.open_alerts(serving)
    assert [(name, a.kind, a.what, a.version) for name, a in found] == [
        ("fraud", "data_quality", "null_rate", 1),
        ("fraud", "performance", "auc", 1),
    ]
    staging = await monitoring.open_alerts([("fraud", 1, "staging")])
    assert [(a.what, a.environment) for _, a in staging] == [("staging", "staging")]
    # a model no check ever named, and nothing serving at all
    assert await monitoring.open_alerts([("churn", 1, "production")]) == []
    assert await monitoring.open_alerts([]) == []

    # a clean data-quality check of v1 closes its alert; the performance one stays open
    await resources.store.append(
        model_stream("fraud"), [checked("data_quality", 1)], meta=WORKER, expected_version=None
    )
    found = await monitoring.open_alerts(serving)
    assert [(a.kind, a.what) for _, a in found] == [("performance", "auc")]

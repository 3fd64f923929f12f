"""Jobs: requesting one (an event on the model's stream), reading its status, and what a
worker or the sweeper needs to judge it (the request as recorded, the job's events)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from app.services.governance import Governance, Outcome
from app.store import codec
from app.store.artifacts import ArtifactStore
from app.store.codec import RecordedEvent
from app.store.events import EventStore, Idempotency
from domain import events as ev
from domain.commands import RequestJob
from domain.decide import model_stream
from domain.errors import InvalidInput, NotFound
from domain.sweep import JobEvent

JOB_EVENT_TYPES = ("job.requested", "job.started", "job.succeeded", "job.failed", "job.requeued")
# a job's events: those of its model's stream from its request on (the (stream, version)
# index serves the range), matched by job id
_HISTORY = (
    f"SELECT {codec.COLUMNS} FROM events "  # noqa: S608 - fixed columns
    "WHERE stream = $1 AND version >= (SELECT version FROM events WHERE position = $2) "
    "AND type = ANY($3) AND data->>'job_id' = $4 ORDER BY version"
)
_JOB_COLUMNS = (
    "job_id, kind, name AS model, version, params, status, attempts, requested_position, "
    "requested_at, requested_by, started_at, finished_at, result, error, details"
)


class CompileResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A certified native build: its digest and how far it is from the model's own scores."""

    library_sha256: str
    max_abs_diff: float
    rows_checked: int
    # the policy's limit for the model's format when it was certified (on `max_scaled_diff`;
    # before that was recorded, on `max_abs_diff`)
    tolerance: float
    # max_abs_diff / max(1, the largest |reference score|); absent in older certificates
    max_scaled_diff: float | None = None
    # what computed the scores compared with, and its version (e.g. `xgboost 3.2.0`)
    reference: str | None = None


class ComplianceResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The fairness check: whether it passed, and its report (JSON and Markdown artifacts)."""

    passed: bool
    report_sha256: str
    failures: list[str] = msgspec.field(default_factory=list)
    markdown_sha256: str | None = None


class DriftResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The drift check: its worst severity, how many alerts it raised, its report."""

    severity: str
    alerts: int
    report_sha256: str


class BanditResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bandit update: the challenger's probability to beat the champion, the winner once
    the experiment concluded, and the champion after the update (the winner, once it settled
    the deployment; absent in results recorded before conclusions settled it)."""

    probability_to_beat: float
    concluded: bool
    winner: int | None = None
    champion: int | None = None


class PerformanceResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An outcome check: the worst severity, the alerts it raised, the labelled rows read."""

    severity: str
    alerts: int
    rows: int


class DataQualityResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A data-quality check: the worst severity, the alerts it raised, the inputs read."""

    severity: str
    alerts: int
    rows: int


class ExperimentResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One look at an A/B experiment: the effect (challenger mean - champion mean), its
    always-valid p-value, and how it ended, if this look ended it."""

    p_value: float
    effect: float
    outcome: Literal["winner", "no_difference", "guardrail_breach"] | None = None
    winner: int | None = None


class TrainResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The version a training run registered, and the compile job it requested (and the
    compliance job, when the request named a fairness check)."""

    version: int
    artifact_sha256: str
    compile_job_id: str
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    compliance_job_id: str | None = None


class _JobView(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """A job's request, attempts and outcome, as the jobs view holds them (and the API shows).

    `params` are the request's as recorded; `result` is set once it succeeded, typed by kind;
    `error` and `details` once an attempt failed.
    """

    job_id: str
    model: str
    version: int | None
    params: dict[str, Any]
    status: Literal["requested", "running", "succeeded", "failed"]
    attempts: int
    requested_at: datetime
    requested_by: str
    requested_position: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    details: dict[str, Any] | None = None


# what each kind's request may carry in `params` (the request is recorded as sent)
TrainParams = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="dataset_sha256, target; optionally trainer (lightgbm | sklearn), "
        "params (the trainer's), seed"
    ),
]
CompileParams = Annotated[
    dict[str, Any], msgspec.Meta(description="optionally holdout_sha256 (parity rows)")
]
ComplianceParams = Annotated[
    dict[str, Any],
    msgspec.Meta(description="dataset_sha256, target; optionally sensitive_features, threshold"),
]
DriftParams = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="environment; optionally dataset_sha256 (the window; else the "
        "prediction log), window_rows"
    ),
]
BanditParams = Annotated[dict[str, Any], msgspec.Meta(description="environment")]
PerformanceParams = Annotated[
    dict[str, Any], msgspec.Meta(description="optionally environment, window_days")
]
ExperimentParams = Annotated[
    dict[str, Any], msgspec.Meta(description="experiment_id (the experiment to look at)")
]
DataQualityParams = Annotated[
    dict[str, Any], msgspec.Meta(description="optionally environment, window_rows")
]


class TrainJob(_JobView, frozen=True, kw_only=True, tag="train"):
    """A training run: the version it registered."""

    params: TrainParams
    result: TrainResult | None = None


class CompileJob(_JobView, frozen=True, kw_only=True, tag="compile"):
    """A native build: its parity certificate."""

    params: CompileParams
    result: CompileResult | None = None


class ComplianceJob(_JobView, frozen=True, kw_only=True, tag="compliance"):
    """A fairness check: whether it passed, and its report."""

    params: ComplianceParams
    result: ComplianceResult | None = None


class DriftJob(_JobView, frozen=True, kw_only=True, tag="drift"):
    """A drift check: its severity, alerts and report."""

    params: DriftParams
    result: DriftResult | None = None


class BanditJob(_JobView, frozen=True, kw_only=True, tag="bandit"):
    """A bandit update: the posteriors' verdict."""

    params: BanditParams
    result: BanditResult | None = None


class PerformanceJob(_JobView, frozen=True, kw_only=True, tag="performance"):
    """An outcome check against delayed labels: its severity and alerts."""

    params: PerformanceParams
    result: PerformanceResult | None = None


class DataQualityJob(_JobView, frozen=True, kw_only=True, tag="data_quality"):
    """A data-quality check of scoring inputs: its severity and alerts."""

    params: DataQualityParams
    result: DataQualityResult | None = None


class ExperimentJob(_JobView, frozen=True, kw_only=True, tag="experiment"):
    """A look at an A/B experiment: its statistics, and its end if this look ended it."""

    params: ExperimentParams
    result: ExperimentResult | None = None


# tagged by `kind`: each kind's result has its own type. The result structs forbid unknown
# fields: a key a job kind starts recording (domain/jobs.py) fails the job-kind tests until its
# view describes it, instead of vanishing from the API.
JobView = (
    TrainJob
    | CompileJob
    | ComplianceJob
    | DriftJob
    | BanditJob
    | PerformanceJob
    | DataQualityJob
    | ExperimentJob
)


class RequestedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job request as recorded: what to run, on whose behalf, caused by which event."""

    request: ev.JobRequested
    meta: ev.EventMeta
    event_id: uuid.UUID
    position: int


class Jobs:
    """Job requests and their status."""

    def __init__(self, store: EventStore, governance: Governance, artifacts: ArtifactStore) -> None:
        self._store = store
        self._governance = governance
        self._artifacts = artifacts

    async def request(
        self, command: RequestJob, meta: ev.EventMeta, idem: Idempotency | None
    ) -> Outcome:
        """Append a job request; the dispatcher relays it to the workers."""
        digest = command.params.get("dataset_sha256")
        if isinstance(digest, str) and len(digest) == 64 and not self._artifacts.exists(digest):
            raise InvalidInput(f"no uploaded dataset {digest}", field="params.dataset_sha256")
        return await self._governance.handle(command, meta, idem)

    async def view(self, job_id: str) -> JobView:
        """The job's status, or NotFound."""
        row = await self._store.pool.fetchrow(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = $1",  # noqa: S608 - fixed columns
            job_id,
        )
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        fields = dict(row)
        for column in ("params", "result", "details"):
            if fields[column] is not None:
                fields[column] = msgspec.json.decode(fields[column])
        view: JobView = msgspec.convert(fields, JobView)
        return view

    async def requested(self, job_id: str, position: int) -> RequestedJob:
        """The request at `position`, which must be this job's (the dispatcher says so)."""
        recorded = await self._store.read_all(position - 1, 1)
        found = recorded[0] if recorded and recorded[0].position == position else None
        if found is None or not _is_request(found, job_id):
            raise NotFound(f"no request for job {job_id} at position {position}")
        assert isinstance(found.event, ev.JobRequested)
        return RequestedJob(
            request=found.event, meta=found.meta, event_id=found.event_id, position=position
        )

    async def history(self, name: str, job_id: str, position: int) -> tuple[list[JobEvent], int]:
        """A job's events (its request at `position` first) and its model stream's version.

        The version is read first: a decision taken on these events and appended with it as
        the expected version conflicts if anything was added to the stream since.
        """
        stream = model_stream(name)
        version: int = await self._store.pool.fetchval(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream = $1", stream
        )
        rows = await self._store.pool.fetch(
            _HISTORY, stream, position, list(JOB_EVENT_TYPES), job_id
        )
        recorded = codec.recorded_page(rows)
        if not recorded or recorded[0].position != position:
            raise NotFound(f"no request for job {job_id} at position {position}")
        return [JobEvent(r.event, r.recorded_at, r.position) for r in recorded], version


def _is_request(recorded: RecordedEvent, job_id: str) -> bool:
    return isinstance(recorded.event, ev.JobRequested) and recorded.event.job_id == job_id

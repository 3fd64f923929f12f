"""A/B experiments of a model: start one, read one, list them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from app.http.auth import event_meta, idempotency, requires
from app.http.problems import never_answers
from app.http.schemas import Input
from app.services.governance import Governance
from app.services.registry import Registry
from domain import commands as cmd
from domain import events as ev
from domain.errors import NotFound
from domain.state import Experiment

Req = Request[Any, Any, Any]
WRITERS = requires("admin", "ci")


class MetricIn(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The primary metric: the mean feedback reward of an arm's predictions."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    # binary: rewards are 0/1 (conversion, default, fraud caught); continuous: any value
    kind: Literal["binary", "continuous"] = "binary"
    # increase: higher is better (conversion); decrease: lower is (default rate, loss)
    direction: Literal["increase", "decrease"] = "increase"


class FairnessIn(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The challenger's largest gap between the groups of a sensitive feature, read from the
    input rows the prediction log keeps (`prediction_sample_rate`)."""

    # one of the challenger's features (its values are the groups)
    feature: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    # the largest difference allowed, within [0, 1]
    max_difference: float
    # demographic_parity: positive-prediction rates; equalized_odds: the larger of the
    # true- and false-positive rates' differences, against outcome labels (0 or 1)
    metric: Literal["demographic_parity", "equalized_odds"] = "demographic_parity"
    # a score at or above it is a positive prediction
    threshold: float = 0.5
    # groups with fewer logged rows (labelled rows for equalized_odds) are not compared
    min_group_size: int = 30


class GuardrailsIn(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits on the challenger's arm; null turns one off."""

    max_error_rate: float | None = 0.01
    max_p99_latency_ms: float | None = None
    fairness: FairnessIn | None = None


class ExperimentCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    environment: str
    champion: int
    challenger: int
    # the share of units the challenger serves
    traffic_percent: float
    metric: MetricIn
    guardrails: GuardrailsIn = msgspec.field(default_factory=GuardrailsIn)
    # the smallest absolute difference of the metric worth finding (sets the mixture's scale)
    minimum_detectable_effect: float
    alpha: float = 0.05
    # outcomes per arm after which it ends without a winner (default for binary metrics:
    # twice the fixed-horizon size at 80% power)
    horizon_per_arm: int | None = None
    min_samples_per_arm: int = 100


class ArmOut(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    predictions: int
    outcomes: int
    mean: float
    variance: float
    errors: int
    p99_latency_ms: float | None


class GuardrailOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    value: float | None
    limit: float
    passed: bool


class LookOut(msgspec.Struct, frozen=True, kw_only=True):
    """The latest always-valid statistics: effect = challenger - champion."""

    champion: ArmOut
    challenger: ArmOut
    effect: float
    std_error: float
    # null: unbounded yet
    ci_low: float | None
    ci_high: float | None
    p_value: float
    guardrails: list[GuardrailOut]
    updates: int


class ConclusionOut(msgspec.Struct, frozen=True, kw_only=True):
    outcome: str
    winner: int | None
    effect: float
    ci_low: float | None
    ci_high: float | None
    p_value: float
    reason: str
    concluded_at: datetime | None


class ExperimentOut(msgspec.Struct, frozen=True, kw_only=True):
    experiment_id: str
    model: str
    environment: str
    champion: int
    challenger: int
    traffic_percent: float
    metric: MetricIn
    guardrails: GuardrailsIn
    minimum_detectable_effect: float
    alpha: float
    horizon_per_arm: int
    min_samples_per_arm: int
    # running, winner, no_difference, guardrail_breach, or stopped (its deployment changed)
    status: str
    started_at: datetime
    started_by: str
    position: int
    latest: LookOut | None
    conclusion: ConclusionOut | None
    stopped_reason: str | None


class ExperimentsOut(msgspec.Struct, frozen=True, kw_only=True):
    experiments: list[ExperimentOut]


def render(experiment: Experiment) -> ExperimentOut:
    """An experiment as the API shows it."""
    started = experiment.started
    latest, ended = experiment.latest, experiment.ended
    look = None
    if latest is not None:
        look = LookOut(
            champion=_arm(latest.champion),
            challenger=_arm(latest.challenger),
            effect=latest.effect,
            std_error=latest.std_error,
            ci_low=latest.ci_low,
            ci_high=latest.ci_high,
            p_value=latest.p_value,
            guardrails=[GuardrailOut(**msgspec.structs.asdict(g)) for g in latest.guardrails],
            updates=experiment.updates,
        )
    conclusion = None
    if ended is not None:
        conclusion = ConclusionOut(
            outcome=ended.outcome,
            winner=ended.winner,
            effect=ended.effect,
            ci_low=ended.ci_low,
            ci_high=ended.ci_high,
            p_value=ended.p_value,
            reason=ended.reason,
            concluded_at=experiment.ended_at,
        )
    return ExperimentOut(
        experiment_id=started.experiment_id,
        model=started.name,
        environment=started.environment,
        champion=started.champion,
        challenger=started.challenger,
        traffic_percent=started.traffic_percent,
        metric=MetricIn(**msgspec.structs.asdict(started.metric)),
        guardrails=msgspec.convert(msgspec.to_builtins(started.guardrails), GuardrailsIn),
        minimum_detectable_effect=started.minimum_detectable_effect,
        alpha=started.alpha,
        horizon_per_arm=started.horizon_per_arm,
        min_samples_per_arm=started.min_samples_per_arm,
        status=experiment.status,
        started_at=experiment.started_at,
        started_by=experiment.started_by,
        position=experiment.position,
        latest=look,
        conclusion=conclusion,
        stopped_reason=experiment.stopped_reason,
    )


def _arm(arm: ev.ArmSummary) -> ArmOut:
    return ArmOut(**msgspec.structs.asdict(arm))


def _command(name: str, data: ExperimentCreate) -> cmd.StartExperiment:
    return cmd.StartExperiment(
        name=name,
        experiment_id=str(uuid.uuid4()),
        environment=data.environment,
        champion=data.champion,
        challenger=data.challenger,
        traffic_percent=data.traffic_percent,
        metric=ev.ExperimentMetric(**msgspec.structs.asdict(data.metric)),
        guardrails=msgspec.convert(msgspec.to_builtins(data.guardrails), ev.Guardrails),
        minimum_detectable_effect=data.minimum_detectable_effect,
        alpha=data.alpha,
        horizon_per_arm=data.horizon_per_arm,
        min_samples_per_arm=data.min_samples_per_arm,
    )


class ExperimentController(Controller):
    """A/B experiments between a champion and a challenger, with always-valid statistics."""

    path = "/v1/models/{name:str}/experiments"
    tags = ["experiments"]

    @post(operation_id="startExperiment", guards=[WRITERS], status_code=201)
    async def start(
        self,
        name: FromPath[str],
        data: JSONBody[ExperimentCreate],
        request: Req,
        governance: NamedDependency[Governance],
        registry: NamedDependency[Registry],
    ) -> ExperimentOut:
        """Start an experiment: the challenger runs as a canary at the split (a promotion,
        through its gates, unless it already runs so); units with a `unit_id` are assigned
        by hash. 409 with `unmet_gates` when the promotion is blocked."""
        outcome = await governance.handle(
            _command(name, data), event_meta(request), idempotency(request, data)
        )
        started = next(e.event for e in outcome.events if isinstance(e.event, ev.ExperimentStarted))
        return await _read(registry, name, started.experiment_id)

    @get(operation_id="listExperiments", opt=never_answers(409))
    async def list_experiments(
        self, name: FromPath[str], registry: NamedDependency[Registry]
    ) -> ExperimentsOut:
        """Every experiment of the model, newest first."""
        model, _ = await registry.model_state(name)
        experiments = sorted(model.experiments.values(), key=lambda e: -e.position)
        return ExperimentsOut(experiments=[render(e) for e in experiments])

    @get("/{experiment_id:str}", operation_id="getExperiment", opt=never_answers(409))
    async def get_experiment(
        self, name: FromPath[str], experiment_id: FromPath[str], registry: NamedDependency[Registry]
    ) -> ExperimentOut:
        """One experiment: its settings, latest statistics and conclusion."""
        return await _read(registry, name, experiment_id)


async def _read(registry: Registry, name: str, experiment_id: str) -> ExperimentOut:
    model, _ = await registry.model_state(name)
    experiment = model.experiments.get(experiment_id)
    if experiment is None:
        raise NotFound(f"no experiment {experiment_id} on {name}")
    return render(experiment)

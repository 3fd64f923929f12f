"""The scorer: deployed versions' compiled libraries, called in process, switched atomically.

The routing table maps (model, environment) to a Route, or to the reason why what is
deployed there cannot be served. It is rebuilt off the request path when the log grows and
swapped by one reference assignment, so a request sees the old table or the new one, never a
mix; a request holds the Route it started with, which keeps its libraries alive. A library is
loaded (in a thread) only after its digest matches the certified, approved one.

When a deployment names a library that cannot be verified, that (model, environment)
answers 503 until it can: the scorer serves what the log names or nothing, never the
previous version in its place. A challenger that cannot be verified leaves its champion
serving all traffic.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from app.outages import report_failure
from app.scoring.announce import Announcer, served_keys
from app.scoring.explain import ArtifactRefused, Explanations
from app.scoring.features import FeatureSchema, FeatureValue
from app.scoring.ids import IdPool, prediction_ids
from app.scoring.library import CompiledLibrary, LibraryRefused
from app.scoring.metrics import count_refusal, scorer_metrics
from app.scoring.predlog import PredictionLog
from app.scoring.routing import (
    Route,
    Served,
    plan_route,
    refusal,
    served_version,
    unit_hasher,
)
from app.store.artifacts import ArtifactStore
from app.store.projections.governance import decode_state
from app.store.projector import Projector
from app.store.watch import Subscription
from domain.errors import InvalidInput, NotFound
from domain.policy import Policy, PolicyBook
from domain.state import ModelState, VersionState

_log = logging.getLogger("model_ledger.scoring")
# models changed since, that serve somewhere or did (those deployed nowhere have no route: most
# of what changes, and decoding their states on every refresh was most of an idle scorer's work)
_CHANGED = (
    "SELECT name, state FROM model_states m WHERE position > $1 "
    "AND (EXISTS (SELECT 1 FROM deployments d WHERE d.name = m.name) OR name = ANY($2))"
)
# the events that change what a scorer routes: deployments, bandit arms, policies
ROUTING_EVENTS = (
    "deployment.changed",
    "bandit.updated",
    "policy.set",
    "experiment.started",
    "experiment.ended",
)
# Appends of only these events change no route: a scorer's follower is not woken by them
# (a new model serves nowhere; tokens and job requests are not the registry's state)
NOT_ROUTING = (
    "model.registered",
    "token.issued",
    "token.revoked",
    "job.requested",
    "job.started",
    "job.requeued",
)
# batches at least this big are scored in a thread (the library releases the GIL)
_THREAD_ROWS = 2_000

Table = dict[tuple[str, str], Route | str]


class RouteUnavailable(Exception):
    """Something is deployed, but no verified library can serve it now (503)."""


@dataclass(frozen=True, kw_only=True)
class ScorerConfig:
    """Limits and identity of one scorer instance."""

    instance: str
    max_rows: int = 10_000
    # a missed notification delays a switch by at most this long
    poll_seconds: float = 5.0
    loaded_interval_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class Scored:
    """What one request got: the version that scored, its scores and prediction ids."""

    route: Route
    served: Served
    arm: str
    scores: list[Any]
    prediction_ids: list[str]
    contributions: list[dict[str, float]] | None = None


class Scorer:
    """Scores requests with the libraries the deployments name; see the module docstring."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        projector: Projector,
        policies: Callable[[], Awaitable[PolicyBook]],
        artifacts: ArtifactStore,
        log: PredictionLog,
        announcer: Announcer,
        config: ScorerConfig,
        ids: IdPool,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._projector = projector
        self._policies = policies
        self._artifacts = artifacts
        self._log = log
        self._announcer = announcer
        self.config = config
        self._ids = ids
        self.rng = rng or random.Random()  # noqa: S311 - traffic splits, not secrets
        self._table: Table = {}
        self._states: dict[str, ModelState] = {}
        self._book: PolicyBook | None = None
        self._libraries: dict[str, CompiledLibrary] = {}
        self._retry: set[str] = set()  # models whose last build refused a library
        self._seen = 0
        self._refreshing = asyncio.Lock()
        self._explanations = Explanations(artifacts)
        self.ready = False

    def routes(self) -> Mapping[tuple[str, str], Route | str]:
        """The current table (read-only): a Route, or why the deployment cannot serve."""
        return self._table

    async def score(
        self,
        name: str,
        environment: str,
        rows: list[list[float | None]] | None,
        features: Mapping[str, FeatureValue] | None,
        *,
        explain: bool = False,
        count_errors: bool = True,
        unit_id: str | None = None,
    ) -> Scored:
        """Score rows (or one row by feature name) with the version routing picks; a
        `unit_id` keeps a unit in one arm of a running experiment; a failure is counted unless
        `count_errors` is False (a caller that retries elsewhere)."""
        started = time.perf_counter()
        route = self._table.get((name, environment))
        if route.__class__ is not Route:
            raise _missing(name, environment, route, count=count_errors)
        assert isinstance(route, Route)
        served, arm = route.pick(self.rng, unit_id)
        meter = route.meters[arm]
        try:
            scored = await self._score(
                route,
                served,
                arm,
                rows,
                features,
                explain=explain,
                unit_id=unit_id,
                started=started,
            )
        except InvalidInput:
            if count_errors:
                meter.invalid.inc()
            raise
        except Exception:
            if count_errors:
                meter.failed.inc()
            raise
        meter.seconds.observe(time.perf_counter() - started)
        meter.rows.inc(len(scored.prediction_ids))
        return scored

    async def _score(
        self,
        route: Route,
        served: Served,
        arm: str,
        rows: list[list[float | None]] | None,
        features: Mapping[str, FeatureValue] | None,
        *,
        explain: bool,
        unit_id: str | None,
        started: float,
    ) -> Scored:
        library = served.library
        matrix: npt.NDArray[np.float64] | None = None
        if features is not None:
            if rows is not None:
                raise InvalidInput("send rows or features, not both")
            inputs: Any = served.schema.row(features)
            _check_width(inputs, library, served.version)
            scores = [_plain(library.predict_one(inputs))]
            ids = [self._ids.take()]
        elif rows is None:
            raise InvalidInput("send rows (a list of rows) or features (one row by name)")
        elif len(rows) == 1:
            inputs = rows[0]
            _check_width(inputs, library, served.version)
            scores = [_plain(library.predict_one(inputs))]
            ids = [self._ids.take()]
        else:
            inputs = matrix = self._matrix(rows, library, served.version)
            if len(rows) >= _THREAD_ROWS:
                scored = await asyncio.to_thread(library.predict_batch, matrix)
            else:
                scored = library.predict_batch(matrix)
            scores = scored.tolist()
            ids = prediction_ids(len(scores))
        contributions = None
        if explain:
            contributions = await self._explain(served, inputs if matrix is None else matrix)
        self._log.record(
            route,
            served,
            arm,
            ids,
            scores,
            inputs=inputs,
            features=features,
            unit_id=unit_id,
            latency_us=(time.perf_counter() - started) * 1e6,
        )
        return Scored(route, served, arm, scores, ids, contributions)

    def _matrix(
        self, rows: list[list[float | None]], library: CompiledLibrary, version: int
    ) -> npt.NDArray[np.float64]:
        if not rows:
            raise InvalidInput("rows must hold at least one row", field="rows")
        if len(rows) > self.config.max_rows:
            raise InvalidInput(
                f"at most {self.config.max_rows} rows a request, not {len(rows)}", field="rows"
            )
        width = library.num_feature
        for row in rows:
            if len(row) != width:
                raise _width_error(len(row), width, version)
        # None (JSON null) becomes NaN, which the library passes as missing
        return np.array(rows, dtype=np.float64)

    async def _explain(self, served: Served, inputs: Any) -> list[dict[str, float]]:
        matrix = np.array(inputs if isinstance(inputs, np.ndarray) else [inputs], np.float64)
        try:
            return await self._explanations.explain(served, matrix)
        except (ArtifactRefused, NotFound) as error:
            raise RouteUnavailable(f"no verified artifact to explain with: {error}") from error

    async def follow(self, subscription: Subscription) -> None:
        """Refresh whenever the log grows (and every `poll_seconds` regardless)."""
        while True:
            await subscription.wait(self.config.poll_seconds)
            try:
                await self.refresh()
            except Exception as error:  # the current routes stay
                report_failure(_log, "scorer refresh", error)

    async def refresh(self) -> None:
        """Catch up with the log; rebuild and swap the routes of models that changed."""
        async with self._refreshing:
            head = await self._projector.catch_up()
            rows = await self._pool.fetch(_CHANGED, self._seen, list(self._states))
            book = await self._policies()
            changed = {row["name"] for row in rows}
            self._states.update((row["name"], decode_state(row["state"])) for row in rows)
            if book != self._book:
                changed = set(self._states)  # a policy can change what may serve anywhere
            changed |= self._retry
            if changed:
                await self._rebuild(changed, book)
            self._book, self._seen, self.ready = book, max(self._seen, head), True
        await self._announcer.announce()

    async def _rebuild(self, names: set[str], book: PolicyBook) -> None:
        built: Table = {}
        self._retry -= names
        try:
            for name in sorted(names):
                built.update(await self._build(self._states[name], book))
        except BaseException:
            self._retry |= names  # the next refresh tries them all again
            raise
        table = {key: entry for key, entry in self._table.items() if key[0] not in names}
        table.update(built)
        self._table = table  # the switch: one reference assignment
        in_use = {key[4] for key in served_keys(table)}
        self._libraries = {sha: lib for sha, lib in self._libraries.items() if sha in in_use}
        self._announcer.serving(table)

    async def _build(self, model: ModelState, book: PolicyBook) -> Table:
        policy, _ = book.of(model.risk_tier)
        built: Table = {}
        for environment, slot in sorted(model.deployments.items()):
            plan = plan_route(model, slot)
            if plan is None:
                continue
            key = (model.name, environment)
            champion = await self._serve(model, plan.champion, environment, policy)
            if isinstance(champion, str):
                built[key] = champion
                continue
            challenger = None
            if plan.challenger is not None:
                found = await self._serve(model, plan.challenger, environment, policy)
                challenger = found if isinstance(found, Served) else None
            experiment = plan.experiment if challenger is not None else None
            built[key] = Route(
                name=model.name,
                environment=environment,
                strategy=plan.strategy if challenger is not None else "full",
                champion=champion,
                challenger=challenger,
                traffic=plan.traffic,
                arms=plan.arms,
                # no experiment counts while its challenger cannot serve
                experiment=experiment,
                hasher=unit_hasher(experiment) if experiment else None,
            )
        return built

    async def _serve(
        self, model: ModelState, version: VersionState, environment: str, policy: Policy
    ) -> Served | str:
        """The version bound to its verified library, or why it may not serve."""
        reason = refusal(version, environment, policy)
        library = None
        if reason is None:
            assert version.compiled is not None
            digest = version.compiled.library_sha256
            library = self._libraries.get(digest)
            if library is None:
                try:
                    library = await asyncio.to_thread(self._open, digest)
                except (LibraryRefused, NotFound, InvalidInput, OSError) as error:
                    reason = f"library of version {version.version} refused: {error}"
                else:
                    self._libraries[digest] = library
        if reason is not None or library is None:
            self._retry.add(model.name)
            scorer_metrics().libraries_refused.inc()
            _log.warning("%s/%s not served: %s", model.name, environment, reason)
            return f"{model.name} in {environment} cannot be served: {reason}"
        schema = FeatureSchema.of_version(version.feature_names, version.params)
        return served_version(version, library, schema)

    def _open(self, digest: str) -> CompiledLibrary:
        return CompiledLibrary.open(self._artifacts.path_of(digest), digest)


def _missing(name: str, environment: str, entry: Route | str | None, *, count: bool) -> Exception:
    if isinstance(entry, str):
        if count:
            count_refusal(name, environment, "unavailable")
        return RouteUnavailable(entry)
    if count:  # not the request's names: they would make a series per name anyone sends
        count_refusal("", "", "not_deployed")
    return NotFound(f"nothing of {name!r} is deployed in {environment!r}")


def _check_width(row: Sequence[float | None], library: CompiledLibrary, version: int) -> None:
    if len(row) != library.num_feature:
        raise _width_error(len(row), library.num_feature, version)


def _width_error(found: int, width: int, version: int) -> InvalidInput:
    return InvalidInput(f"a row of version {version} has {width} values, not {found}", field="rows")


def _plain(score: float | npt.NDArray[np.float64]) -> Any:
    return score if isinstance(score, float) else score.tolist()

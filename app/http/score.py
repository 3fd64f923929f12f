"""Scoring with the deployed versions' compiled libraries, and rewards for predictions.

The score route is the hot path. Successful requests are answered by its handler middleware
(`app.http.score_fast`) without Litestar's per-request machinery; the handler below answers
the rest, and is what the OpenAPI document describes. It reads its body itself with one
reused msgspec decoder (Litestar's own body parsing measured ~50 us a request more), and
skips the app's NUL scan (nothing of a scoring body reaches the log: feature names must match
the version's schema, values are numbers or are matched against its categories).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Router, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ServiceUnavailableException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler

from app.http.auth import requires
from app.http.bodies import decode_json
from app.http.problems import never_answers, problem_response
from app.http.schemas import Input
from app.http.score_fast import ScoreFastPath
from app.scoring.feedback import Rewards
from app.scoring.scorer import RouteUnavailable, Scored, Scorer
from app.settings import Settings

Req = Request[Any, Any, Any]
SCORERS = requires("scorer", "admin")


class ScoreRequest(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Rows by position (`null` = missing), or one row by feature name."""

    rows: list[list[float | None]] | None = None
    # text values of categorical features are mapped to the version's category codes
    features: dict[str, float | str | bool | None] | None = None
    # the unit (customer, account) scored: while an A/B experiment runs, the same unit always
    # gets the same arm; logged with each prediction
    unit_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class ScoreOut(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Scores of the rows, in order, with the version and library digest that made them."""

    model: str
    environment: str
    version: int
    library_sha256: str
    arm: Annotated[
        str,
        msgspec.Meta(description="champion, or challenger (canary, bandit): the one that scored"),
    ]
    scores: Annotated[
        list[float | list[float]],
        msgspec.Meta(
            description="One entry per row, in order. A number for a binary classifier "
            "(P(class 1), for every format and estimator, random forests included), a "
            "regression or an IsolationForest (its outlier score); a list of k class "
            "probabilities for a k-class classifier (k >= 3), or one value per target for a "
            "multi-output model."
        ),
    ]
    prediction_ids: list[str]
    # `?explain=true`: per row, each feature's contribution to the raw margin, and "bias"
    contributions: list[dict[str, float]] | None = None


class FeedbackIn(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A reward, an observed outcome label, or both (each at most once per prediction)."""

    prediction_id: uuid.UUID
    # a finite number: within [0, 1] (1 a success for a bandit) unless the prediction belongs
    # to an A/B experiment, whose continuous metric (revenue, loss) takes any value
    reward: float | None = None
    # the outcome observed for the prediction (0 or 1 for a classifier, the value for a
    # regression): the performance job compares it with the score
    label: float | None = None
    # when the outcome was observed (RFC 3339, with a zone); default: now
    observed_at: datetime | None = None


class FeedbackOut(msgspec.Struct, frozen=True, kw_only=True):
    prediction_id: uuid.UUID
    name: str
    environment: str
    version: int
    reward: float | None
    recorded_at: datetime
    label: float | None = None
    observed_at: datetime | None = None


_request = msgspec.json.Decoder(ScoreRequest)


def _render(name: str, environment: str, scored: Scored) -> ScoreOut:
    served = scored.served
    return ScoreOut(
        model=name,
        environment=environment,
        version=served.version,
        library_sha256=served.library_sha256,
        arm=scored.arm,
        scores=scored.scores,
        prediction_ids=scored.prediction_ids,
        contributions=scored.contributions,
    )


def _documents_the_body(data: ScoreRequest) -> ScoreRequest:
    """Never called: it names the score route's body for the OpenAPI document."""
    return data


async def _no_nul_scan(_: Req) -> None:
    """The score route's before_request: replaces the app's NUL scan (see the module)."""


class ScoreController(Controller):
    """In-process scoring with the verified library of the version routing picks."""

    path = "/v1/score"
    tags = ["scoring"]
    guards = [SCORERS]

    @post(
        "/{name:str}",
        operation_id="score",
        status_code=200,
        before_request=_no_nul_scan,
        middleware=[DefineMiddleware(ScoreFastPath, decode=_request.decode, render=_render)],
        dependencies={"documented_body": Provide(_documents_the_body, sync_to_thread=False)},
        responses={
            413: problem_response("the body is larger than the limit"),
            503: problem_response(
                "deployed, but no verified library can serve it now; or a store is unavailable"
            ),
        },
        opt=never_answers(409),
    )
    async def score(
        self,
        name: FromPath[str],
        request: Req,
        scorer: NamedDependency[Scorer],
        environment: Annotated[
            str, QueryParameter(description="the deployment to score with")
        ] = "production",
        explain: Annotated[
            bool, QueryParameter(description="add each feature's contribution (lightgbm)")
        ] = False,
    ) -> ScoreOut:
        """Score rows with what is deployed; 404 if nothing is, 422 on a wrong width."""
        try:
            body = decode_json(await request.body(), _request.decode)
        except msgspec.DecodeError as error:
            raise ValidationException(
                f"Validation failed for POST {request.url.path}",
                extra=[{"message": str(error), "source": "body"}],
            ) from error
        try:
            scored = await scorer.score(
                name, environment, body.rows, body.features, explain=explain, unit_id=body.unit_id
            )
        except RouteUnavailable as error:
            raise ServiceUnavailableException(str(error)) from error
        return _render(name, environment, scored)


class FeedbackController(Controller):
    """Rewards for predictions (what bandit experiments learn from)."""

    path = "/v1/feedback"
    tags = ["scoring"]
    guards = [SCORERS]

    @post(
        operation_id="recordFeedback",
        status_code=202,
        responses={503: problem_response("the database is unavailable (scoring goes on)")},
    )
    async def feedback(
        self, data: JSONBody[FeedbackIn], rewards: NamedDependency[Rewards]
    ) -> FeedbackOut:
        """Record a prediction's reward (in [0, 1]; any finite value for a prediction of an A/B
        experiment) and/or its observed outcome label (all or nothing); 404 unknown id, 409
        already rewarded (labelled), 422 a reward off [0, 1] outside an experiment."""
        recorded = await rewards.record(
            data.prediction_id, data.reward, label=data.label, observed_at=data.observed_at
        )
        return FeedbackOut(
            prediction_id=recorded.prediction_id,
            name=recorded.name,
            environment=recorded.environment,
            version=recorded.version,
            reward=recorded.reward,
            recorded_at=recorded.recorded_at,
            label=recorded.label,
            observed_at=recorded.observed_at,
        )


def scoring_routes(settings: Settings) -> list[ControllerRouterHandler]:
    """The scoring and feedback routes, scoring bodies up to `score_max_body_bytes`."""
    return [
        Router(
            path="/",
            route_handlers=[ScoreController],
            request_max_body_size=settings.score_max_body_bytes,
        ),
        FeedbackController,
    ]

"""The train job: fit a model on an uploaded dataset, register it with its lineage, and
request its compile job (certified on the training holdout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domain import commands as cmd
from domain import events as ev
from domain import jobs
from workers.jobs import inputs
from workers.ml.train import TrainOutcome, train
from workers.runner import Context, JobInputError


def train_in_child(
    dataset: str, target: str, params: dict[str, Any], trainer: str, seed: int
) -> TrainOutcome:
    """Runs in the process pool."""
    return train(Path(dataset), target, params, kind=trainer, seed=seed)  # type: ignore[arg-type]


async def run(ctx: Context) -> cmd.Trained:
    """Train, store the model, its reference profile and holdout, then decide the version."""
    job, settings = ctx.job, ctx.resources.settings
    await inputs.subject(ctx)  # the model must exist before minutes of training
    dataset_sha256 = str(job.params["dataset_sha256"])
    dataset = inputs.stored(ctx, dataset_sha256, "dataset")
    target = str(job.params["target"])
    trainer, seed, params = _options(job.params)
    outcome = await ctx.pool.run(
        settings.job_timeout_seconds, train_in_child, str(dataset), target, params, trainer, seed
    )
    artifact = await ctx.resources.artifacts.put_bytes(outcome.model)
    profile = await inputs.put(ctx, outcome.profile)
    holdout = await inputs.put_matrix(ctx, outcome.holdout)
    command = cmd.RegisterVersion(
        name=job.name,
        compile_job_id=jobs.child_job_id(job.job_id, "compile"),
        artifact_sha256=artifact.sha256,
        artifact_size=artifact.size,
        format=outcome.format,
        model_feature_names=outcome.feature_names,
        num_trees=outcome.num_trees,
        metrics=outcome.metrics,
        params={**outcome.params, "categories": outcome.categorical_maps},
        lineage=_lineage(job, dataset_sha256, profile),
        compile_params={"holdout_sha256": holdout},
    )
    return cmd.Trained(version=command)


def _lineage(job: ev.JobRequested, dataset_sha256: str, profile: str) -> ev.Lineage:
    """Where the version came from; a retraining's job adds the alert, parent version and
    named dataset version its policy resolved (recorded in the request by the policy)."""
    retrained = job.params.get("retraining")
    origin = retrained if isinstance(retrained, dict) else {}
    return ev.Lineage(
        dataset_sha256=dataset_sha256,
        training_job=job.job_id,
        target=str(job.params["target"]),
        profile_sha256=profile,
        triggered_by=origin.get("triggered_by"),
        parent_version=origin.get("parent_version"),
        dataset=origin.get("dataset"),
        dataset_version=origin.get("dataset_version"),
    )


def _options(params: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    trainer = params.get("trainer", "lightgbm")
    seed = params.get("seed", 0)
    model_params = params.get("params", {})
    if trainer not in ("lightgbm", "sklearn"):
        raise JobInputError("params.trainer must be lightgbm or sklearn")
    if not isinstance(seed, int) or not isinstance(model_params, dict):
        raise JobInputError("params.seed must be an integer and params.params an object")
    return trainer, seed, model_params

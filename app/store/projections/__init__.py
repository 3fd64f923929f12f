"""The projections (views) of the log, one module each."""

from __future__ import annotations

from app.store.projection import Projection
from app.store.projections.governance import GovernanceProjection
from app.store.projections.jobs import JobsProjection
from app.store.projections.tokens import TokensProjection


def all_projections(*, snapshot_every: int = 250) -> list[Projection]:
    """Every projection the server maintains, in the order they are applied."""
    return [TokensProjection(), GovernanceProjection(snapshot_every), JobsProjection()]

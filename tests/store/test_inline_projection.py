"""The governance views are written in the append's transaction (app/store/inline.py): a
command's own write is in the views when it returns, without a catch-up; an append never
waits for the asynchronous projector; rows and events commit together or not at all."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

from app.resources import Resources
from app.store.codec import RecordedEvent
from app.store.events import EventStore
from app.store.inline import InlineProjections
from app.store.projections.governance import GovernanceProjection
from domain import commands as cmd
from domain import events as ev
from domain.decide import model_stream
from domain.tokens import token_stream
from tests.workers.jobs_helpers import wait_for

CI = ev.EventMeta(actor="pipeline", role="ci")


async def _checkpoint(pool: asyncpg.Pool, name: str = "governance") -> int:
    position: int = await pool.fetchval(
        "SELECT position FROM projection_checkpoints WHERE name = $1", name
    )
    return position


async def _described(pool: asyncpg.Pool, name: str) -> str | None:
    state = await pool.fetchrow("SELECT name FROM model_states WHERE name = $1", name)
    return None if state is None else str(state["name"])


async def test_a_command_commits_its_view_rows_with_its_events(resources: Resources) -> None:
    await resources.projector.catch_up()
    outcome = await resources.governance.handle(cmd.RegisterModel(name="inl", risk_tier="low"), CI)
    # every view's checkpoint moved in the append's transaction, each up to the append
    for view in ("governance", "jobs", "tokens"):
        assert await _checkpoint(resources.pool, view) == outcome.position, view
    assert await _described(resources.pool, "inl") == "inl"


async def test_a_job_request_is_in_the_jobs_view_when_it_commits(resources: Resources) -> None:
    await resources.projector.catch_up()
    await resources.governance.handle(cmd.RegisterModel(name="jv", risk_tier="low"), CI)
    plain = EventStore(resources.pool)  # reads the view as another process would
    request = ev.JobRequested(job_id="j-inline", kind="drift", name="jv", version=None)
    result = await resources.store.append(
        model_stream("jv"), [request], meta=CI, expected_version=None
    )
    status = await plain.pool.fetchval("SELECT status FROM jobs WHERE job_id = 'j-inline'")
    assert status == "requested"
    assert await _checkpoint(resources.pool, "jobs") == result.last_position


async def test_an_append_does_not_wait_for_a_projector_holding_the_view(
    resources: Resources, database_url: str
) -> None:
    await resources.projector.catch_up()
    holder = await asyncpg.connect(database_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(
            "SELECT position FROM projection_checkpoints WHERE name = 'governance' FOR UPDATE"
        )
        command = asyncio.create_task(
            resources.governance.handle(cmd.RegisterModel(name="held", risk_tier="low"), CI)
        )

        async def appended() -> bool:
            count = await resources.pool.fetchval(
                "SELECT count(*) FROM events WHERE stream = $1", model_stream("held")
            )
            return bool(count)

        await wait_for(appended, seconds=30, every=0.01)  # committed while the view is held
        assert not command.done()  # the command waits for its view: read-your-writes
        await transaction.rollback()
        outcome = await command
    finally:
        await holder.close()
    assert await _described(resources.pool, "held") == "held"
    assert await _checkpoint(resources.pool) >= outcome.position


async def test_events_appended_without_the_view_are_projected_first(
    resources: Resources,
) -> None:
    await resources.projector.catch_up()
    plain = EventStore(resources.pool)  # appends without inline projections
    registered = ev.ModelRegistered(name="gap", risk_tier="low")
    await plain.append(model_stream("gap"), [registered], meta=CI, expected_version=0)
    assert await _described(resources.pool, "gap") is None
    update = cmd.UpdateModel(name="gap", description="after the gap")
    outcome = await resources.governance.handle(update, CI)
    assert await _checkpoint(resources.pool) == outcome.position
    model, _ = await resources.registry.model_state("gap")
    assert model.description == "after the gap"


class _Failing(GovernanceProjection):
    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        await super().apply(conn, events)
        raise RuntimeError("the view cannot take these rows")


async def test_a_view_that_fails_fails_the_append_and_leaves_nothing(
    resources: Resources,
) -> None:
    await resources.projector.catch_up()
    store = EventStore(resources.pool, inline=InlineProjections([_Failing()]))
    before = await _checkpoint(resources.pool)
    registered = ev.ModelRegistered(name="torn", risk_tier="low")
    with pytest.raises(RuntimeError, match="cannot take"):
        await store.append(model_stream("torn"), [registered], meta=CI, expected_version=0)
    count = await resources.pool.fetchval(
        "SELECT count(*) FROM events WHERE stream = $1", model_stream("torn")
    )
    assert count == 0
    assert await _described(resources.pool, "torn") is None
    assert await _checkpoint(resources.pool) == before


async def test_kept_states_are_read_again_after_another_process_projected_between(
    resources: Resources,
) -> None:
    """Process A keeps a model's state after its commit; process B changes the model (its
    own inline view moves the checkpoint); A then appends an event the view does not follow
    (a token), then changes the model again: A must not write over B's change from what it
    kept. (It did: the token's batch marked A's stale states current past B's position.)"""
    await resources.projector.catch_up()
    first = EventStore(resources.pool, inline=InlineProjections([GovernanceProjection()]))
    second = EventStore(resources.pool, inline=InlineProjections([GovernanceProjection()]))
    stream = model_stream("kept")
    registered = ev.ModelRegistered(name="kept", risk_tier="low")
    await first.append(stream, [registered], meta=CI, expected_version=0)
    await first.append(
        stream, [ev.ModelUpdated(name="kept", description="first")], meta=CI, expected_version=1
    )
    await second.append(
        stream, [ev.ModelUpdated(name="kept", description="second")], meta=CI, expected_version=2
    )
    token = ev.TokenIssued(token_id="t-kept", subject="s", role="ci", token_sha256="0" * 64)
    await first.append(token_stream("t-kept"), [token], meta=CI, expected_version=0)
    await first.append(
        stream, [ev.ModelUpdated(name="kept", owner="risk")], meta=CI, expected_version=3
    )
    model, _ = await resources.registry.model_state("kept")
    assert (model.description, model.owner) == ("second", "risk")

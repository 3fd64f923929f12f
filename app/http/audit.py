"""The auditor's raw views: the event log and its verification."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from app.http.auth import requires
from app.http.schemas import EventOut, EventPage
from app.services.audit import AuditLog, Head, VerifyReport
from app.store.codec import StoredEvent


def event_out(row: StoredEvent) -> EventOut:
    """An event as the API shows it: stored JSON passed through byte for byte."""
    return EventOut(
        position=row.position,
        stream=row.stream,
        version=row.version,
        event_id=row.event_id,
        type=row.type,
        data=msgspec.Raw(row.data.encode()),  # type: ignore[arg-type]
        meta=msgspec.Raw(row.meta.encode()),  # type: ignore[arg-type]
        recorded_at=row.recorded_at,
        prev_hash=row.prev_hash.hex(),
        hash=row.hash.hex(),
    )


class AuditController(Controller):
    """Reading and verifying the log (auditor, admin)."""

    tags = ["audit"]
    guards = [requires("auditor", "admin")]

    @get("/v1/events", operation_id="listEvents")
    async def events(
        self,
        audit: NamedDependency[AuditLog],
        after: Annotated[
            int, QueryParameter(ge=0, description="return events after this position")
        ] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 1_000,
        stream: Annotated[str | None, QueryParameter(description="only this stream")] = None,
        event_type: Annotated[
            str | None, QueryParameter(name="type", description="only this event type")
        ] = None,
    ) -> EventPage:
        """Events after a global position, in order; `next` is the cursor for the next page."""
        rows = await audit.events(after, limit, event_type=event_type, stream=stream)
        return EventPage(
            events=[event_out(row) for row in rows],
            next=rows[-1].position if rows else after,
        )

    @get("/v1/audit/verify", operation_id="verifyLog")
    async def verify(
        self,
        audit: NamedDependency[AuditLog],
        expect_head: Annotated[
            str | None,
            QueryParameter(
                pattern=r"^[0-9]{1,19}:[0-9a-fA-F]{64}$",
                description=(
                    "POSITION:HASH of a head you were shown: fail if the log no longer "
                    "reaches it with this hash"
                ),
            ),
        ] = None,
    ) -> VerifyReport:
        """Recompute the hash chain, check every signed checkpoint and the checkpoint chain,
        and compare with the witness file and an expected head."""
        return await audit.verify(None if expect_head is None else Head.parse(expect_head))

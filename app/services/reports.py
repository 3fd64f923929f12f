"""The evidence reports a version's events name (compliance, drift), served as stored."""

from __future__ import annotations

import asyncio
import hashlib
import re

import msgspec

from app.store.artifacts import ArtifactStore
from app.store.events import EventStore
from domain.decide import model_stream
from domain.errors import NotFound

# the events that record a report of a version, and what kind of report each is
_KINDS = {"compliance.checked": "compliance", "drift.checked": "drift"}
_DIGEST = re.compile(r"[0-9a-f]{64}")
# the first event of the model's stream naming this report for this version; `data` is json
# text, whose fields PostgreSQL reads without a jsonb conversion
_RECORDED = """
SELECT position, type FROM events
WHERE stream = $1 AND type = ANY($2)
  AND data ->> 'report_sha256' = $3 AND (data ->> 'version')::bigint = $4
ORDER BY version LIMIT 1
"""


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """A stored report and the event that recorded it."""

    kind: str
    position: int
    content: bytes


class Reports:
    """Reports by digest, only as evidence of the version whose events name them."""

    def __init__(self, store: EventStore, artifacts: ArtifactStore) -> None:
        self._store = store
        self._artifacts = artifacts

    async def get(self, name: str, version: int, sha256: str) -> Report:
        """The report `sha256` recorded for `name` version `version`; NotFound otherwise."""
        missing = NotFound(
            f"version {version} of {name!r} has no report with sha256 {sha256}", sha256=sha256
        )
        if _DIGEST.fullmatch(sha256) is None:
            raise missing
        row = await self._store.pool.fetchrow(
            _RECORDED, model_stream(name), list(_KINDS), sha256, version
        )
        if row is None:
            raise missing
        content = await asyncio.to_thread(self._read, sha256)
        return Report(kind=_KINDS[row["type"]], position=row["position"], content=content)

    def _read(self, sha256: str) -> bytes:
        content = self._artifacts.path_of(sha256).read_bytes()
        # content-addressed: bytes that no longer hash to their name are not the evidence
        if hashlib.sha256(content).hexdigest() != sha256:
            raise NotFound(f"the stored report {sha256} is damaged", sha256=sha256)
        return content

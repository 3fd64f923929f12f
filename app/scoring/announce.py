"""`scorer.loaded`: what each scorer instance actually serves, beside what was intended.

Appended to the instance's own stream (`scorer-<instance>`), never the model's: the model
stream's version is the ETag clients send as If-Match. At most one event per (model,
environment, version, arm) per instance per interval; a switch that happens within the
interval is announced once the interval has passed, if it still serves then, so the last
event of each (model, environment, arm) always names what serves.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping

from app.scoring.routing import Route
from app.store.events import EventStore
from domain import events as ev

_log = logging.getLogger("model_ledger.scoring")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

# (name, environment, arm, version, library_sha256)
ServedKey = tuple[str, str, str, int, str]


def instance_stream(instance: str) -> str:
    """The stream of one scorer instance's events."""
    return f"scorer-{instance}"


def safe_instance(name: str) -> str:
    """An instance name usable in a stream name (host names may hold anything)."""
    return _UNSAFE.sub("-", name)[:100] or "scorer"


def served_keys(table: Mapping[tuple[str, str], Route | str]) -> set[ServedKey]:
    """Every library a routing table serves, by model, environment and arm."""
    return {
        (route.name, route.environment, arm, served.version, served.library_sha256)
        for route in table.values()
        if isinstance(route, Route)
        for arm, served in route.served()
    }


class Announcer:
    """Appends rate-limited `scorer.loaded` events for the libraries an instance starts serving."""

    def __init__(
        self,
        store: EventStore,
        instance: str,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.instance = instance
        self._interval = interval_seconds
        self._clock = clock
        self._serving: set[ServedKey] = set()
        self._unannounced: set[ServedKey] = set()
        self._last: dict[tuple[str, str, int, str], float] = {}

    def serving(self, table: Mapping[tuple[str, str], Route | str]) -> None:
        """A new table serves: what it serves and did not before is to be announced."""
        now_serving = served_keys(table)
        self._unannounced |= now_serving - self._serving
        self._serving = now_serving

    async def announce(self) -> None:
        """Append the announcements that are due (a failure leaves them due)."""
        self._unannounced &= self._serving
        now = self._clock()
        due = [
            key
            for key in sorted(self._unannounced)
            if (last := self._last.get(_limit_key(key))) is None or now - last >= self._interval
        ]
        if not due:
            return
        # taken before the append suspends: a concurrent refresh must not announce them too
        self._unannounced.difference_update(due)
        events = [
            ev.ScorerLoaded(
                instance=self.instance,
                name=name,
                environment=environment,
                version=version,
                library_sha256=digest,
                arm=arm,
            )
            for name, environment, arm, version, digest in due
        ]
        try:
            await self._store.append(
                instance_stream(self.instance),
                events,
                meta=ev.EventMeta(actor=f"scorer:{self.instance}", role="scorer"),
                expected_version=None,
            )
        except BaseException as error:
            self._unannounced.update(due)  # still due, a cancelled refresh's too
            if not isinstance(error, Exception):
                raise
            _log.exception("could not record scorer.loaded; retrying at the next refresh")
            return
        for key in due:
            self._last[_limit_key(key)] = now


def _limit_key(key: ServedKey) -> tuple[str, str, int, str]:
    name, environment, arm, version, _ = key
    return name, environment, version, arm

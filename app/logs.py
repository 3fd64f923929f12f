"""The log setup every process shares: one format, and arq's housekeeping kept out of sight."""

from __future__ import annotations

import logging
import re

LEVELS = ("debug", "info", "warning", "error")
# arq's line for a cron job starting, ending, retried or aborted: `0.49s → cron:name()`
_CRON_JOB = re.compile(r"[→←↻⊘] cron:")


class HousekeepingFilter(logging.Filter):
    """Drops arq's INFO lines about the housekeeping crons (the views' check every 15 s, the
    checkpoint every minute) and its health record (every 30 s): a quiet server's terminal
    filled with them. Jobs that were asked for, and anything above INFO, still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for an INFO line about a cron job or the health record."""
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not (message.startswith("recording health") or _CRON_JOB.search(message))


def configure_logging(level: str, *, timestamps: bool = False) -> None:
    """Log at `level`; arq's housekeeping lines only at `debug`."""
    stamp = "%(asctime)s " if timestamps else ""
    logging.basicConfig(format=stamp + "%(levelname)s %(name)s: %(message)s")
    # basicConfig does nothing once the root has a handler (the embedded PostgreSQL's
    # package installs one first): the level is set either way
    logging.getLogger().setLevel(level.upper())
    arq = logging.getLogger("arq.worker")
    for found in [f for f in arq.filters if isinstance(f, HousekeepingFilter)]:
        arq.removeFilter(found)
    if level.lower() != "debug":
        arq.addFilter(HousekeepingFilter())

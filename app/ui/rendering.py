"""What the console's pages show, shaped from the services' answers (no queries here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from app.services.registry import diff
from app.services.views import GATED_VIEW_ENVIRONMENT, ApprovalView, ModelView, VersionView
from domain.state import ModelState

# digests (64 hex digits) are shortened in a timeline row; the API history has them whole
_HASH_LENGTH = 64
_SHORT_HASH = 12
# fields a timeline row already says (the event's tag, the model)
_SAID = frozenset({"type", "name"})


def dossier_cell(value: object) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def matches(model: ModelView, wanted: str) -> bool:
    return wanted in model.name.lower() or any(wanted in tag.lower() for tag in model.tags)


def last_change(model: ModelView) -> datetime:
    moments = [model.registered_at]
    moments += [v.registered_at for v in model.versions]
    moments += [v.retired_at for v in model.versions if v.retired_at]
    moments += [d.updated_at for d in model.deployments.values() if d.updated_at]
    return max(moments)


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) == _HASH_LENGTH:
        return value[:_SHORT_HASH] + "…"
    return value


def timeline_row(
    event: dict[str, Any], by_id: dict[str, dict[str, Any]], here: set[int]
) -> dict[str, Any]:
    meta = event["meta"]
    data = event["data"]
    cause = by_id.get(meta.get("causation_id") or "")
    return {
        "position": event["position"],
        "version": event["version"],
        "type": event["type"],
        "recorded_at": event["recorded_at"],
        "actor": meta.get("actor", ""),
        "role": meta.get("role", ""),
        "what": [
            (key, _short(value))
            for key, value in data.items()
            if isinstance(value, (str, int, float, bool)) and value != "" and key not in _SAID
        ],
        "cause": None
        if cause is None
        else {
            "type": cause["type"],
            "position": cause["position"],
            "on_page": cause["position"] in here,
        },
        "causation_id": meta.get("causation_id"),
    }


def shown_change(change: dict[str, Any]) -> dict[str, Any]:
    def text(value: Any) -> str:
        return value if isinstance(value, str) else msgspec.json.encode(value).decode()

    return {
        "path": change["path"],
        "change": change["change"],
        "before": text(change["before"]) if "before" in change else "",
        "after": text(change["after"]) if "after" in change else "",
    }


def why_not_counted(approval: ApprovalView, now: datetime) -> str:
    if approval.counts:
        return ""
    if approval.decision != "approve":
        return "a rejection"
    if approval.revoked:
        return "revoked by its approver"
    if approval.expires_at is not None and approval.expires_at <= now:
        return f"expired at {approval.expires_at:%Y-%m-%d %H:%M} UTC"
    return "the evidence changed since (artifact, compiled library or reports)"


def champion_to_compare(model: ModelState, number: int) -> tuple[str, int] | None:
    """The champion a version is reviewed against: production's, else the first environment's
    that has one (None when the version is that champion, or none serves)."""
    ordered = sorted(model.deployments.items(), key=lambda item: item[0] != GATED_VIEW_ENVIRONMENT)
    for environment, slot in ordered:
        if slot.champion is not None:
            return None if slot.champion == number else (environment, slot.champion)
    return None


def evidence_changes(champion: VersionView, candidate: VersionView) -> list[dict[str, Any]]:
    """What differs between the champion's evidence and a candidate's, leaf by leaf."""
    return [shown_change(c) for c in diff(_evidence(champion), _evidence(candidate))]


def _evidence(version: VersionView) -> dict[str, Any]:
    return {
        "format": version.format,
        "artifact_sha256": version.artifact_sha256,
        "library_sha256": version.compiled.library_sha256 if version.compiled else None,
        "features": version.feature_names,
        "metrics": version.metrics,
        "params": msgspec.to_builtins(version.params),
        "compliance": None if version.compliance is None else version.compliance.metrics,
    }

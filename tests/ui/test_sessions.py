"""Console sessions in memory: expiry by idle time and by age, and the bound on their number."""

from __future__ import annotations

import pytest

from app.services.authenticator import Principal
from app.ui import sessions as module
from app.ui.sessions import Sessions

ADA = Principal(subject="ada", role="auditor")


def test_a_session_lives_while_used_and_not_past_its_lifetime() -> None:
    now = [0.0]
    store = Sessions(idle_seconds=10, max_seconds=25, clock=lambda: now[0])
    session_id, opened = store.open(ADA, "digest")
    assert opened.token_digest == "digest" and opened.csrf_token
    for moment in (9.0, 18.0, 25.0):
        now[0] = moment
        assert store.get(session_id) is opened
    now[0] = 25.5
    assert store.get(session_id) is None
    assert len(store) == 0


def test_an_idle_session_ends_and_ids_are_not_guessable() -> None:
    now = [0.0]
    store = Sessions(idle_seconds=10, clock=lambda: now[0])
    first, _ = store.open(ADA, "d")
    second, _ = store.open(ADA, "d")
    assert first != second and len(first) >= 40
    now[0] = 10.5
    assert store.get(first) is None
    assert store.get("") is None and store.get("made-up") is None


def test_the_oldest_sessions_make_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "MAX_SESSIONS", 3)
    store = Sessions()
    ids = [store.open(ADA, "d")[0] for _ in range(5)]
    assert len(store) == 3
    assert [store.get(i) is not None for i in ids] == [False, False, True, True, True]

"""Subjects compare case-insensitively (four-eyes included, over events written before tokens
were normalised), and the token deciders: issuing normalises, revoking is idempotent and
never takes the last admin token."""

from __future__ import annotations

import msgspec
import pytest

from domain import commands as cmd
from domain import decide
from domain import events as ev
from domain.decide import FourEyes
from domain.errors import Conflict, InvalidInput, NotFound
from domain.gates import lifecycle_state, valid_approvers
from domain.policy import Policy
from domain.subjects import same_subject, subject_key
from domain.tokens import (
    IssueToken,
    LastAdminToken,
    TokenFacts,
    fold_token,
    issue_token,
    revoke_token,
)
from tests.domain.test_deciders import NAME, T0, approved, compiled, given, registered, version

# As an old log holds them: issued before subjects were normalised, with their case.
OLD_TOKEN = (
    b'{"type":"token.issued","token_id":"0a8ef6df954028ea","subject":"Approver-User",'
    b'"role":"approver","token_sha256":"' + b"e" * 64 + b'"}'
)
_decoder = msgspec.json.Decoder(ev.AnyEvent)


def old_approval(approver: str) -> tuple[ev.Event, str]:
    """A `version.approved` by `approver` exactly as spelled: what the old code recorded."""
    state = given(registered("high"), version(1), compiled(1))
    event, _ = approved(1, "someone-else", state)
    assert isinstance(event, ev.VersionApproved)
    return msgspec.structs.replace(event, approver=approver), approver


def test_subject_keys_strip_and_fold_case() -> None:
    assert subject_key("  Approver-User ") == "approver-user"
    assert same_subject("CI-Bot", "ci-bot")
    assert not same_subject("ci-bot", "ci-bot2")


def test_tokens_are_issued_with_the_normalised_subject() -> None:
    [issued] = issue_token(
        IssueToken(subject=" Approver-User ", role="approver"), token_id="t1", token_sha256="e"
    )
    assert issued.subject == "approver-user"
    with pytest.raises(InvalidInput):  # what is checked is the subject as given
        issue_token(IssueToken(subject="ẞig", role="ci"), token_id="t2", token_sha256="e")


def test_an_old_mixed_case_token_folds_to_its_normalised_subject() -> None:
    event = _decoder.decode(OLD_TOKEN)
    assert isinstance(event, ev.TokenIssued) and event.subject == "Approver-User"
    facts = fold_token([event])
    assert facts == TokenFacts(
        token_id="0a8ef6df954028ea", subject="approver-user", role="approver"
    )


def test_one_approver_in_two_cases_counts_once() -> None:
    state = given(registered("high"), version(1), compiled(1), old_approval("Approver-User"))
    assert state is not None
    with pytest.raises(Conflict, match="already approved"):
        approved(1, "approver-user", state)
    assert valid_approvers(state.versions[1], T0) == ["Approver-User"]
    assert lifecycle_state(state.versions[1], Policy(required_approvals=2), T0) != "approved"


def test_two_spellings_in_an_old_log_are_still_one_approver() -> None:
    state = given(
        registered("high"),
        version(1),
        compiled(1),
        old_approval("Approver-User"),
        old_approval("approver-user"),
    )
    assert state is not None
    assert len(valid_approvers(state.versions[1], T0)) == 1
    assert lifecycle_state(state.versions[1], Policy(required_approvals=2), T0) != "approved"


def test_the_registrant_in_another_case_may_not_approve() -> None:
    state = given(registered(), (version(1)[0], "CI-Bot"), compiled(1))
    with pytest.raises(FourEyes):
        approved(1, "ci-bot", state)


def test_revoking_reaches_decisions_recorded_in_another_case() -> None:
    state = given(registered("high"), version(1), compiled(1), old_approval("Approver-User"))
    events = decide.revoke_approval(
        cmd.RevokeDecision(name=NAME, version=1, approver="approver-user", reason="oops"), state
    )
    # named as recorded, so the fold (and the flat approvals view) match it exactly
    assert events == [
        ev.ApprovalRevoked(name=NAME, version=1, approver="Approver-User", reason="oops")
    ]
    after = given(
        registered("high"),
        version(1),
        compiled(1),
        old_approval("Approver-User"),
        (events[0], "approver-user"),
    )
    assert after is not None and valid_approvers(after.versions[1], T0) == []
    with pytest.raises(Conflict):
        decide.revoke_approval(
            cmd.RevokeDecision(name=NAME, version=1, approver="APPROVER-USER", reason="again"),
            after,
        )


def test_a_rejection_by_the_other_spelling_is_the_same_person_deciding() -> None:
    state = given(registered(), version(1), compiled(1), old_approval("Approver-User"))
    rejected = decide.decide_approval(
        cmd.DecideVersion(name=NAME, version=1, approver="approver-user", decision="reject"),
        state,
        cmd.Facts(now=T0, policy=Policy()),
    )
    assert isinstance(rejected[0], ev.VersionRejected)


ADMIN = TokenFacts(token_id="a1", subject="root", role="admin")


def test_revoking_a_token_appends_one_event_and_twice_nothing() -> None:
    assert revoke_token(ADMIN, "a1", reason="left", live_admin_tokens=2) == [
        ev.TokenRevoked(token_id="a1", reason="left")
    ]
    revoked = msgspec.structs.replace(ADMIN, revoked=True)
    assert revoke_token(revoked, "a1", reason="again", live_admin_tokens=1) == []


def test_the_last_live_admin_token_is_never_revoked() -> None:
    with pytest.raises(LastAdminToken) as raised:
        revoke_token(ADMIN, "a1", reason="", live_admin_tokens=1)
    assert raised.value.code == "last_admin_token" and isinstance(raised.value, Conflict)
    scorer = TokenFacts(token_id="s1", subject="app", role="scorer")
    assert revoke_token(scorer, "s1", reason="", live_admin_tokens=1)


def test_unknown_tokens_and_long_reasons_are_refused() -> None:
    with pytest.raises(NotFound):
        revoke_token(None, "nope", reason="", live_admin_tokens=3)
    with pytest.raises(InvalidInput):
        revoke_token(ADMIN, "a1", reason="x" * 501, live_admin_tokens=3)


def test_folding_a_token_stream() -> None:
    issued = ev.TokenIssued(token_id="a1", subject="Root", role="admin", token_sha256="e")
    assert fold_token([]) is None
    assert fold_token([issued]) == TokenFacts(token_id="a1", subject="root", role="admin")
    revoked = fold_token([issued, ev.TokenRevoked(token_id="a1")])
    assert revoked is not None and revoked.revoked

"""Approvals bind the evidence present when given: given an approval, when evidence changes,
then it stops counting and says why; the approvals gate names it."""

from __future__ import annotations

from datetime import timedelta

from domain import events as ev
from domain.gates import evaluate_gates, lapse_reason, missing_evidence
from domain.policy import DEFAULT_POLICIES
from domain.state import ModelState
from tests.domain.test_deciders import NAME, T0, approved, compiled, given, registered, version

HIGH = DEFAULT_POLICIES["high"]


def compliance(report: str, passed: bool = True) -> tuple[ev.Event, str]:
    checked = ev.ComplianceChecked(
        name=NAME, version=1, passed=passed, report_sha256=report, policy_version=0
    )
    return checked, "worker"


def approvals_gate(state: ModelState) -> str:
    gates = evaluate_gates(state, state.versions[1], "production", HIGH, T0)
    return next(g.detail for g in gates if g.name == "approvals")


def test_an_approval_before_the_compliance_check_warns_then_lapses_naming_the_report() -> None:
    before = given(registered("high"), version(1), compiled(1))
    assert before is not None
    # given an approval while the required compliance check is missing, it is warned
    assert missing_evidence(before.versions[1], HIGH)[0].startswith("compliance: ")
    first = approved(1, "bob", before)
    report = "ab" * 32
    # when the compliance report is recorded
    after = given(registered("high"), version(1), compiled(1), first, compliance(report))
    assert after is not None
    decision = after.versions[1].decisions[0]
    # then the approval no longer counts, and says which evidence changed
    assert lapse_reason(decision, after.versions[1], T0) == (
        f"evidence_changed: compliance report {report[:12]} added after approval"
    )
    assert approvals_gate(after) == (
        "0 of 2 required approvals (high risk); lapsed: bob (evidence_changed: compliance "
        f"report {report[:12]} added after approval)"
    )
    assert missing_evidence(after.versions[1], HIGH) == []


def test_a_replaced_report_an_expiry_and_a_revocation_each_say_so() -> None:
    old, new = "aa" * 32, "bb" * 32
    checked = given(registered("high"), version(1), compiled(1), compliance(old))
    bob = approved(1, "bob", checked, days=1)
    state = given(registered("high"), version(1), compiled(1), compliance(old), bob)
    assert state is not None
    decision = state.versions[1].decisions[0]
    assert lapse_reason(decision, state.versions[1], T0) is None
    assert lapse_reason(decision, state.versions[1], T0 + timedelta(days=2)) == (
        f"expired: at {decision.expires_at.isoformat() if decision.expires_at else ''}"
    )
    replaced = given(
        registered("high"), version(1), compiled(1), compliance(old), bob, compliance(new)
    )
    assert replaced is not None
    assert lapse_reason(replaced.versions[1].decisions[0], replaced.versions[1], T0) == (
        f"evidence_changed: compliance report {new[:12]} replaced compliance report "
        f"{old[:12]} after approval"
    )
    revoked = given(
        registered("high"),
        version(1),
        compiled(1),
        compliance(old),
        bob,
        (ev.ApprovalRevoked(name=NAME, version=1, approver="bob", reason="conflict"), "bob"),
    )
    assert revoked is not None
    assert lapse_reason(revoked.versions[1].decisions[0], revoked.versions[1], T0) == (
        "revoked: conflict"
    )
    # a withdrawn approval is not listed as lapsed: it was withdrawn on purpose
    assert "lapsed" not in approvals_gate(revoked)


def test_an_approval_over_a_failed_check_is_warned_that_the_next_check_lapses_it() -> None:
    failed = given(registered("high"), version(1), compiled(1), compliance("ee" * 32, False))
    assert failed is not None
    (warning,) = missing_evidence(failed.versions[1], HIGH)
    assert warning.startswith("compliance: the recorded check (report eeeeeeeeeeee) failed")
    # a tier that requires no compliance check warns of nothing
    assert missing_evidence(failed.versions[1], DEFAULT_POLICIES["low"]) == []


def test_an_approver_who_approved_again_is_not_listed_as_lapsed() -> None:
    report = "cd" * 32
    early = given(registered("high"), version(1), compiled(1))
    bob_early = approved(1, "bob", early)
    checked = given(registered("high"), version(1), compiled(1), bob_early, compliance(report))
    bob_again = approved(1, "bob", checked)
    state = given(
        registered("high"), version(1), compiled(1), bob_early, compliance(report), bob_again
    )
    assert state is not None
    assert approvals_gate(state) == "1 of 2 required approvals (high risk): bob"

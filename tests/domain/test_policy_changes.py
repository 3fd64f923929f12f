"""Amending a policy as given/when/then: given the tier's policy in force, when some fields
change, then a new version with those fields changed and the rest kept."""

from __future__ import annotations

import pytest

from domain import commands as cmd
from domain import events as ev
from domain.errors import InvalidInput, NotFound
from domain.handle import decide as when_command
from domain.policy import DEFAULT_POLICIES, Policy, Threshold
from tests.domain.test_deciders import facts


def test_fields_not_given_keep_the_tiers_current_values() -> None:
    current = DEFAULT_POLICIES["low"]  # approvals expire after 365 days
    events = when_command(
        cmd.AmendPolicy(tier="low", changes={"required_approvals": 2}), None, facts(current, 0)
    )
    assert events == [
        ev.PolicySet(
            risk_tier="low", policy=Policy(**{**_fields(current), "required_approvals": 2})
        )
    ]
    assert events[0].policy.approval_expiry_days == 365  # type: ignore[attr-defined]


def test_a_given_field_is_replaced_whole() -> None:
    current = Policy(metric_thresholds={"auc": Threshold(min=0.7)})
    changes = {"metric_thresholds": {"f1": Threshold(min=0.5)}}
    events = when_command(cmd.AmendPolicy(tier="medium", changes=changes), None, facts(current))
    assert events[0].policy.metric_thresholds == {"f1": Threshold(min=0.5)}  # type: ignore[attr-defined]


def test_bad_changes_and_tiers_are_refused() -> None:
    with pytest.raises(NotFound):
        when_command(cmd.AmendPolicy(tier="extreme", changes={}), None, facts())
    with pytest.raises(InvalidInput):
        when_command(cmd.AmendPolicy(tier="low", changes={"nope": 1}), None, facts())
    with pytest.raises(InvalidInput):
        when_command(cmd.AmendPolicy(tier="low", changes={"required_approvals": 0}), None, facts())


def _fields(policy: Policy) -> dict[str, object]:
    return {name: getattr(policy, name) for name in policy.__struct_fields__}

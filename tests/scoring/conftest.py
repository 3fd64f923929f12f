"""Scoring tests: every input row sampled, the log written promptly."""

from __future__ import annotations

import msgspec
import pytest

from app.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings,
        prediction_sample_rate=1.0,
        prediction_log_flush_seconds=0.05,
        scorer_instance="test-scorer",
    )

"""The chain computed by PostgreSQL re-verifies in Python for any JSON payload."""

from __future__ import annotations

import math
import uuid
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.resources import Resources
from app.services.audit import verify_log
from app.store.events import EventStore

_APPEND = "SELECT * FROM ml_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.1, 1e-300, -0.0, 5e-324, 1.7976931348623157e308, 2**63, -(2**63) - 1])
    | st.text()
)
payloads = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = {"level": level, "next": [value]}
    return value


async def append_raw(store: EventStore, data: Any) -> None:
    text = msgspec.json.encode({"type": "test.payload", "value": data}).decode()
    meta = msgspec.json.encode({"actor": "tést-ü", "role": "admin"}).decode()
    rows = await store.pool.fetch(
        _APPEND,
        ["payloads"],
        [None],
        [None],
        [None],
        [None],
        [1],
        [uuid.uuid4()],
        ["test.payload"],
        [text],
        [meta],
    )
    assert rows[0]["o_status"] == "ok"
    stored = await store.pool.fetchval(
        "SELECT data::text FROM events WHERE position = $1", rows[0]["o_last"]
    )
    assert stored == text  # json keeps the exact text the chain covers
    back = msgspec.json.decode(stored)["value"]
    assert back == data
    if isinstance(data, float) and data == 0.0:
        assert math.copysign(1.0, back) == math.copysign(1.0, data)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=payloads)
async def test_any_payload_round_trips_and_the_chain_verifies(
    resources: Resources, data: Any
) -> None:
    await append_raw(resources.store, data)
    report = await verify_log(resources.store, resources.signing_key.public_key())
    assert report.ok, report.problem


async def test_awkward_values_verify(resources: Resources) -> None:
    for value in [
        0.1,
        1e-300,
        -0.0,
        2**100,
        -(2**100),
        'naïve ☃ \u0000 \U0001f600 "q" \\',
        nested(60),
    ]:
        await append_raw(resources.store, value)
    report = await verify_log(resources.store, resources.signing_key.public_key())
    assert report.ok and report.checked == 7

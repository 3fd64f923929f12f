"""A registration in a process that never read the model's stream is decided as on a new
stream without reading it (app/services/commands.py); when the name is taken after all, the
append's expected version refuses it and the command takes the ordinary path: the same
"already exists" as anywhere, nothing appended, the model's state untouched."""

from __future__ import annotations

import pytest

from app.resources import Resources, open_resources
from app.settings import Settings
from domain import commands as cmd
from domain.decide import model_stream
from domain.errors import Conflict
from domain.events import EventMeta

_META = EventMeta(actor="ci", role="ci")


async def test_a_name_taken_in_another_process_is_refused_as_taken(
    settings: Settings, resources: Resources
) -> None:
    first = await resources.governance.handle(cmd.RegisterModel(name="m", risk_tier="low"), _META)
    async with open_resources(settings) as other:  # its folds know nothing of "m"
        with pytest.raises(Conflict, match="already exists"):
            await other.governance.handle(cmd.RegisterModel(name="m", risk_tier="high"), _META)
        # its fold read the stream on the way: a second try is refused the ordinary way
        with pytest.raises(Conflict, match="already exists"):
            await other.governance.handle(cmd.RegisterModel(name="m", risk_tier="high"), _META)
        fresh = await other.governance.handle(cmd.RegisterModel(name="n", risk_tier="high"), _META)
    assert [e.position for e in await resources.store.read_stream(model_stream("m"))] == [
        first.position
    ]
    state, _ = await resources.registry.model_state("m")
    assert state.risk_tier == "low"
    assert fresh.model is not None
    assert fresh.model.risk_tier == "high"
    assert (await resources.registry.model_state("n"))[0] == fresh.model

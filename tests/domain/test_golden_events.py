"""Every stored event shape ever written still decodes (events evolve additively only).

Append a line to golden_events.jsonl for each new event type or field; never edit a line.
"""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec

from domain import events as ev

GOLDEN = Path(__file__).with_name("golden_events.jsonl")


def _keeps(new: object, old: object) -> bool:
    """`new` holds every key and value of `old`; fields added since may appear with defaults."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and _keeps(new[k], v) for k, v in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(new) == len(old) and all(map(_keeps, new, old))
    return new == old


def test_every_golden_line_decodes_and_reencodes_what_it_said() -> None:
    decoder = msgspec.json.Decoder(ev.AnyEvent)
    for line in GOLDEN.read_bytes().splitlines():
        event = decoder.decode(line)
        assert _keeps(msgspec.json.decode(msgspec.json.encode(event)), msgspec.json.decode(line))


def test_every_event_type_has_a_golden_line() -> None:
    tags = {msgspec.json.decode(line)["type"] for line in GOLDEN.read_bytes().splitlines()}
    known = {t.__struct_config__.tag for t in typing.get_args(ev.AnyEvent)}
    assert known <= tags, f"add golden lines for {sorted(known - tags)}"

"""Checkpoints witnessed outside the database: the file, and a witness URL that is posted to
in the background, retried, counted when it fails, and never waited on by the signer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import REGISTRY

from app.resources import Resources
from app.store.checkpoints import Checkpointer
from app.store.witness import Witness
from domain.events import EventMeta, TokenRevoked
from tests.workers.jobs_helpers import wait_for

META = EventMeta(actor="tester", role="admin")


async def append(resources: Resources, n: int) -> None:
    await resources.store.append(
        "s", [TokenRevoked(token_id=f"t{n}", reason="r")], meta=META, expected_version=None
    )


def writes(target: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "model_ledger_witness_writes_total", {"target": target, "outcome": outcome}
    )
    return value or 0.0


class WitnessServer:
    """A witness service on a port of its own: records the bodies POSTed to it, or, when
    `answer` is False, reads requests and never answers."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.bodies: list[bytes] = []
        self.requests = 0
        self.connections: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            if not self.answer:
                await reader.read()  # until the client gives up
                return
            self.bodies.append(body)
            writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def serving(witness: WitnessServer) -> AsyncIterator[str]:
    server = await asyncio.start_server(witness.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/witness"
    finally:
        server.close()
        # connections the never-answering server holds end with the test
        for connection in witness.connections:
            connection.close()
        await server.wait_closed()


async def test_each_checkpoint_is_posted_to_the_witness_url(
    resources: Resources, tmp_path: Path
) -> None:
    service = WitnessServer()
    async with serving(service) as url:
        path = tmp_path / "witness.jsonl"
        checkpointer = Checkpointer(resources.store, resources.signing_key, Witness(path, url))
        for n in range(3):
            await append(resources, n)
            await checkpointer.sign_head()

        async def all_posted() -> bool:
            return len(service.bodies) == 3

        await wait_for(all_posted, 30)
    posted = [json.loads(body) for body in service.bodies]
    assert sorted(p["sequence"] for p in posted) == [1, 2, 3]
    filed = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(posted, key=lambda p: p["sequence"]) == filed


async def test_an_unreachable_witness_is_retried_counted_and_never_blocks_signing(
    resources: Resources, tmp_path: Path
) -> None:
    # a port bound but not listening: connections are refused
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/witness"
        failed_before = writes("url", "failed")
        retried_before = writes("url", "retried")
        witness = Witness(tmp_path / "witness.jsonl", url)
        checkpointer = Checkpointer(resources.store, resources.signing_key, witness)
        await append(resources, 1)
        assert await checkpointer.sign_head() is not None
        # signed and filed at once; the post goes on in the background
        assert len(witness.path.read_text().splitlines()) == 1  # type: ignore[union-attr]
        await append(resources, 2)

        async def gave_up() -> bool:
            return writes("url", "failed") == failed_before + 1

        await wait_for(gave_up, 30)
    assert writes("url", "retried") == retried_before + 3


async def test_a_witness_that_never_answers_does_not_hold_up_the_signer(
    resources: Resources, tmp_path: Path
) -> None:
    service = WitnessServer(answer=False)
    async with serving(service) as url:
        witness = Witness(tmp_path / "witness.jsonl", url)
        checkpointer = Checkpointer(resources.store, resources.signing_key, witness)
        for n in range(2):
            await append(resources, n)
            assert await checkpointer.sign_head() is not None

        async def both_waiting() -> bool:
            return service.requests == 2

        await wait_for(both_waiting, 30)
        # both signed while both posts still wait for an answer; shutdown cuts them short
        await witness.drain(grace_seconds=0.1)
    assert len((tmp_path / "witness.jsonl").read_text().splitlines()) == 2


async def test_a_witness_file_that_cannot_be_written_is_counted_not_fatal(
    resources: Resources, tmp_path: Path
) -> None:
    blocked = tmp_path / "a-directory"
    blocked.mkdir()
    failed_before = writes("file", "failed")
    checkpointer = Checkpointer(resources.store, resources.signing_key, Witness(blocked))
    await append(resources, 1)
    signed = await checkpointer.sign_head()
    assert signed is not None and signed.sequence == 1
    assert writes("file", "failed") == failed_before + 1


async def test_the_app_witnesses_into_its_data_folder(resources: Resources) -> None:
    await append(resources, 1)
    signed = await resources.checkpointer.sign_head()
    assert signed is not None
    lines = resources.settings.witness_file.read_text().splitlines()
    assert [json.loads(line)["position"] for line in lines] == [signed.position]
    assert resources.settings.witness_file.parent == resources.settings.home

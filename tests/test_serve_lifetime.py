"""Lifetimes on one embedded home, with real processes: `serve` killed with SIGKILL leaves
no orphan and the next `serve` adopts the stack; a second `serve` is refused unless it
shares explicitly; a `scorer` keeps the stack (and scoring) when the `serve` that started
it stops; port clashes are clear messages."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import alive, in_group, kill_group, survivors
from tests.test_serve import (
    CLI,
    Server,
    _compile_in_the_embedded_worker,
    embedded_processes,
    home_env,
    printed_token,
)

pytestmark = pytest.mark.processes

ROW = {"rows": [[0.1, 0.2, 0.3, 1.0]]}


@pytest.fixture
def home() -> Iterator[Path]:
    # not under pytest's tmp folder: see tests/test_serve.py
    path = Path(tempfile.mkdtemp(prefix="model-ledger-life-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts; whatever is left of them is killed, group and all."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop()
        kill_group(server.process.pid)
        server.close()


def _server_pids(home: Path) -> list[int]:
    """The embedded postmaster and redis-server, from their pid files."""
    files = (home / "postgres" / "postmaster.pid", home / "redis" / "redis.pid")
    return [int(f.read_text().split()[0]) for f in files]


def _run(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A command that must end by itself (a refusal, a token)."""
    return subprocess.run(
        [CLI, *args],
        env=home_env(home, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _refused(*args: str, home: Path, **env: str) -> str:
    """What a command that must refuse to start said (no traceback)."""
    done = _run(*args, home=home, **env)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in said, said
    return said


def _wait_gone(home: Path) -> list[str]:
    deadline = time.monotonic() + 30
    while (left := embedded_processes(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_kill_9_leaves_no_orphan_and_the_next_serve_adopts_the_stack(
    home: Path, servers: list[Server]
) -> None:
    first = Server(home)
    servers.append(first)
    first.wait_ready()
    admin = {"Authorization": f"Bearer {printed_token(first.output)}"}
    _compile_in_the_embedded_worker(first.url, admin)  # the in-process worker's job process
    group = in_group(first.process.pid)
    assert any("multiprocessing.spawn" in p.cmdline for p in group), group
    assert any("resource_tracker" in p.cmdline for p in group), group
    stack = _server_pids(home)

    first.process.kill()
    first.process.wait()
    assert survivors(first.process.pid) == []
    assert all(alive(pid) for pid in stack)  # the stack outlives it, for the next start

    second = Server(home)
    servers.append(second)
    second.wait_ready()
    assert _server_pids(home) == stack  # adopted, not restarted
    assert printed_token(second.output) is None
    events = httpx.get(f"{second.url}/v1/events", headers=admin).json()["events"]
    assert "job.succeeded" in [e["type"] for e in events]
    created = httpx.post(
        f"{second.url}/v1/tokens", json={"subject": "after", "role": "ci"}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert second.stop() == 0, "".join(second.output)
    assert _wait_gone(home) == []  # the last one using the stack stopped it


def test_a_second_serve_on_one_home_is_refused_unless_it_shares(
    home: Path, servers: list[Server]
) -> None:
    first = Server(home)
    servers.append(first)
    first.wait_ready()
    port = int(first.url.rsplit(":", 1)[1])

    said = _refused("serve", home=home, MODEL_LEDGER_PORT="0")
    assert f"pid {first.process.pid}" in said and f":{port}" in said, said
    assert "--share-home" in said

    # only the port is in the way now: a clear message, for serve and scorer alike
    said = _refused("serve", "--share-home", home=home, MODEL_LEDGER_PORT=str(port))
    assert f"port {port} " in said and "in use" in said, said
    said = _refused("scorer", "--port", str(port), home=home)
    assert f"port {port} " in said and "in use" in said, said

    second = Server(home, "serve", "--share-home")
    servers.append(second)
    second.wait_ready()
    assert any("sharing this home" in line for line in second.output), second.output
    assert first.stop() == 0, "".join(first.output)
    assert any("keep running" in line for line in first.output), first.output
    assert httpx.get(f"{second.url}/ready").status_code == 200
    assert second.stop() == 0, "".join(second.output)
    assert _wait_gone(home) == []


def test_a_scorer_keeps_scoring_when_the_serve_that_started_the_stack_stops(
    home: Path, servers: list[Server]
) -> None:
    serve = Server(home)
    servers.append(serve)
    serve.wait_ready()
    admin = {"Authorization": f"Bearer {printed_token(serve.output)}"}
    _compile_in_the_embedded_worker(serve.url, admin)
    promoted = httpx.post(
        f"{serve.url}/v1/models/m/promotions",
        json={"version": 1, "environment": "staging"},
        headers=admin,
    )
    assert promoted.status_code == 201, promoted.text
    issued = httpx.post(
        f"{serve.url}/v1/tokens", json={"subject": "app", "role": "scorer"}, headers=admin
    )
    app = {"Authorization": f"Bearer {issued.json()['token']}"}
    scorer = Server(home, "scorer", ready_line="scorer on")
    servers.append(scorer)
    scorer.wait_ready()
    score = f"{scorer.url}/v1/score/m?environment=staging"

    def scores() -> int:
        return httpx.post(score, json=ROW, headers=app, timeout=10).status_code

    deadline = time.monotonic() + 60
    while scores() != 200:  # it loads the deployment it follows
        assert time.monotonic() < deadline, "".join(scorer.output)
        time.sleep(0.2)

    assert serve.stop() == 0, "".join(serve.output)
    assert any("keep running" in line for line in serve.output), serve.output
    assert httpx.get(f"{scorer.url}/ready").status_code == 200
    assert [scores() for _ in range(3)] == [200, 200, 200]
    # the stack serves newcomers too: a new token, checked against the database
    issued_late = _run("tokens", "create", "--role", "scorer", "--subject", "late", home=home)
    assert issued_late.returncode == 0, issued_late.stderr
    late = {"Authorization": f"Bearer {issued_late.stdout.strip()}"}
    deadline = time.monotonic() + 10
    # another process issued it: the scorer's token table learns of it within its poll
    while httpx.post(score, json=ROW, headers=late, timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the scorer never accepted the new token"
        time.sleep(0.05)
    assert scorer.stop() == 0, "".join(scorer.output)
    assert _wait_gone(home) == []

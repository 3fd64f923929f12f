"""`model-ledger serve` on the embedded stack, as the README tells a newcomer to run it."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.http.governance_helpers import lightgbm_model_bytes

pytestmark = pytest.mark.processes

CLI = str(Path(sys.executable).parent / "model-ledger")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def home() -> Iterator[Path]:
    # not under pytest's tmp folder: embedded PostgreSQL runs as its own user and needs
    # the parent folders to stay readable, which pytest resets for its own folders
    path = Path(tempfile.mkdtemp(prefix="model-ledger-serve-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


def home_env(home: Path, **more: str) -> dict[str, str]:
    """This environment without MODEL_LEDGER_ settings, but for the home and `more`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_LEDGER_")}
    env.update(MODEL_LEDGER_HOME=str(home), PYTHONUNBUFFERED="1", **more)
    return env


class Server:
    """`model-ledger COMMAND` (serve unless told) on `home`, in a process group of its own;
    its output is read as it comes (an unread pipe would fill and block the server)."""

    def __init__(self, home: Path, *args: str, ready_line: str = "API on") -> None:
        # port 0: the system picks a free port, which the ready line names (a port chosen
        # here could be taken by anyone before the server binds it)
        self.url = ""
        self.ready_line = ready_line
        self.process = subprocess.Popen(
            [CLI, *(args or ["serve"])],
            env=home_env(home, MODEL_LEDGER_PORT="0", MODEL_LEDGER_SCORER_PORT="0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # what it starts stays in its group (tests/procs.py)
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not (said := [ln for ln in list(self.output) if self.ready_line in ln]):
            assert self.process.poll() is None, "".join(self.output)
            assert time.monotonic() < deadline, "".join(self.output)
            time.sleep(0.05)
        self.url = said[0].split(" on ", 1)[1].split()[0]
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server never became ready:\n" + "".join(self.output))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.close()
            raise AssertionError("did not stop on Ctrl-C:\n" + "".join(self.output)) from None
        self.close()
        return code

    def close(self) -> None:
        """Once the process is gone: the rest of its output read, the pipe closed."""
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        if not self.process.stdout.closed:
            self.process.stdout.close()


def printed_token(output: list[str]) -> str | None:
    for line, following in itertools.pairwise(output):
        if line.startswith("first start: admin token"):
            return following.strip()
    return None


def embedded_processes(home: Path) -> list[str]:
    found = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True, check=True)
    return [
        line
        for line in found.stdout.splitlines()
        if str(home) in line and not line.lstrip().startswith("Z")
    ]


def _compile_in_the_embedded_worker(url: str, admin: dict[str, str]) -> None:
    """serve runs a job worker beside the API on the embedded stack: a version compiles."""
    model = httpx.post(f"{url}/v1/models", json={"name": "m", "risk_tier": "low"}, headers=admin)
    assert model.status_code == 201, model.text
    files = {
        "artifact": ("model.txt", io.BytesIO(lightgbm_model_bytes(1)), "text/plain"),
        "metadata": (None, json.dumps({"format": "lightgbm"}), "application/json"),
    }
    version = httpx.post(f"{url}/v1/models/m/versions", files=files, headers=admin, timeout=60)
    assert version.status_code == 201, version.text
    job = f"{url}/v1/jobs/{version.json()['compile_job_id']}"
    deadline = time.monotonic() + 180
    while (status := httpx.get(job, headers=admin).json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status["status"] == "succeeded", status


def _console_verifies(url: str, token: str) -> None:
    """The served console: sign in with the admin token, verify the log from its page."""
    with httpx.Client(base_url=url) as browser:
        form = browser.get("/ui/sign-in")
        csrf = re.search(r'name="csrf_token" value="([^"]*)"', form.text)
        assert csrf, form.text
        signed = browser.post("/ui/sign-in", data={"csrf_token": csrf.group(1), "token": token})
        assert signed.status_code == 303, signed.text
        verify = browser.get("/ui/verify", params={"run": "true"})
        assert 'Chain status: <span class="ok">intact</span>' in verify.text, verify.text
        assert browser.get("/ui/static/console.css").status_code == 200


def test_serve_starts_embedded_stores_and_restarts_on_the_same_data(home: Path) -> None:
    first = Server(home)
    try:
        first.wait_ready()
        # the embedded superuser made the roles; the server runs as the application's
        role = httpx.get(f"{first.url}/ready").json()["database_role"]
        assert role == {"name": "model_ledger_app", "least_privilege": True, "problems": []}
        token = printed_token(first.output)
        assert token is not None, "".join(first.output)
        token_file = home / "admin.token"
        assert token_file.read_text().strip() == token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        admin = {"Authorization": f"Bearer {token}"}
        created = httpx.post(
            f"{first.url}/v1/tokens", json={"subject": "ci", "role": "ci"}, headers=admin
        )
        assert created.status_code == 201
        _compile_in_the_embedded_worker(first.url, admin)
    finally:
        assert first.stop() == 0, "".join(first.output)
    deadline = time.monotonic() + 10
    while embedded_processes(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert embedded_processes(home) == []

    second = Server(home)
    try:
        second.wait_ready()
        assert printed_token(second.output) is None  # data reused: no second admin token
        events = httpx.get(f"{second.url}/v1/events", headers=admin).json()["events"]
        assert [e["type"] for e in events][:2] == ["token.issued", "token.issued"]
        assert events[-1]["type"] == "job.succeeded"
        assert httpx.get(f"{second.url}/v1/audit/verify", headers=admin).json()["ok"] is True
        _console_verifies(second.url, token)
    finally:
        assert second.stop() == 0, "".join(second.output)

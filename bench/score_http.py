"""H1 of bench/score.py: `POST /v1/score/{name}` against the same server's `GET /health`.

The bench owns an embedded PostgreSQL and Redis in a temp home. `model-ledger serve --worker`
first takes the model through the API as an operator would (tokens, model, version upload,
the compile job, an approval, a promotion to production), then two servers run side by side
on the same stores: uvicorn (`model-ledger serve --no-worker`, what the project ships), granian
(`bench.score_asgi:app`, one worker, uvloop) when granian is installed, and the scoring-only
process (`model-ledger scorer`, uvicorn) when this checkout has it. H1 is judged on `serve`.

At concurrency 1 each request is timed by a blocking HTTP/1.1 client over one keep-alive
socket (a few µs a request; httpx's own overhead is measured beside it, on uvicorn), in
rotating interleaved blocks of every (server, route), each score request with a distinct
row. At concurrency 16, 16 keep-alive connections of a raw asyncio client send requests back
to back; servers alternate rounds, the median round is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import common

MODEL = "bench"
CLI = str(Path(sys.executable).parent / "model-ledger")
GRANIAN = str(Path(sys.executable).parent / "granian")
REPO = Path(__file__).resolve().parent.parent
BLOCK = 200
CONCURRENCY = 16
ROUNDS = 3  # of the concurrency-16 measurement, per server and route


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A server subprocess on the bench's stores, stopped with SIGINT."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.port, self.url = name, port, f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        self.log.seek(0)
        raise RuntimeError(f"{self.name} never became ready:\n{self.log.read()[-4000:]}")

    def stop(self) -> None:
        if self.log.closed:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.log.close()


def _env(home: Path, database_url: str, redis_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_LEDGER_")}
    return env | {
        "MODEL_LEDGER_HOME": str(home),
        "MODEL_LEDGER_DATABASE_URL": database_url,
        # the embedded superuser migrates at startup (a server never migrates on its own)
        "MODEL_LEDGER_MIGRATION_DATABASE_URL": database_url,
        "MODEL_LEDGER_REDIS_URL": redis_url,
        "MODEL_LEDGER_PORT": str(port),
        "MODEL_LEDGER_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }


def _uvicorn(env: dict[str, str], port: int, worker: bool) -> Server:
    flag = "--worker" if worker else "--no-worker"
    return Server("uvicorn", [CLI, "serve", flag], env, port)


def _granian(env: dict[str, str], port: int) -> Server:
    command = [GRANIAN, "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "1"]
    command += ["--no-ws", "--log-level", "warning", "bench.score_asgi:app"]
    return Server("granian", command, env, port)


def _has_scorer_command() -> bool:
    """Whether this checkout has `model-ledger scorer`, the scoring-only process."""
    found = subprocess.run([CLI, "scorer", "--help"], capture_output=True, check=False)
    return found.returncode == 0


def _scorer(env: dict[str, str], port: int) -> Server:
    return Server("scorer", [CLI, "scorer", "--port", str(port)], env, port)


def deploy(url: str, admin_token: str, artifact: Path) -> tuple[str, int]:
    """Register, compile, approve and promote the model to production; a scorer token."""
    with httpx.Client(base_url=url, timeout=60) as client:

        def token(role: str) -> dict[str, str]:
            body = {"subject": f"bench-{role}", "role": role}
            made = client.post("/v1/tokens", json=body, headers=admin)
            made.raise_for_status()
            return {"Authorization": f"Bearer {made.json()['token']}"}

        admin = {"Authorization": f"Bearer {admin_token}"}
        ci, approver, scorer = token("ci"), token("approver"), token("scorer")
        client.post("/v1/models", json={"name": MODEL, "risk_tier": "low"}, headers=ci)
        files: dict[str, Any] = {
            "artifact": ("model.txt", artifact.read_bytes(), "text/plain"),
            "metadata": (None, json.dumps({"format": "lightgbm"}), "application/json"),
        }
        created = client.post(f"/v1/models/{MODEL}/versions", files=files, headers=ci)
        created.raise_for_status()
        version, job = created.json()["version"], created.json()["compile_job_id"]
        deadline = time.monotonic() + 1800
        while (status := client.get(f"/v1/jobs/{job}", headers=ci).json())["status"] not in (
            "succeeded",
            "failed",
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"compile job not done: {status}")
            time.sleep(1)
        if status["status"] != "succeeded":
            raise RuntimeError(f"compile job failed: {status}")
        path = f"/v1/models/{MODEL}/versions/{version}/approvals"
        client.post(path, json={"decision": "approve"}, headers=approver).raise_for_status()
        body = {"version": version, "environment": "production", "strategy": "full"}
        client.post(f"/v1/models/{MODEL}/promotions", json=body, headers=ci).raise_for_status()
    return scorer["Authorization"].removeprefix("Bearer "), version


def score_requests(rows: np.ndarray, token: str) -> list[bytes]:
    """One raw HTTP/1.1 request per row, NaN sent as null."""
    head = (
        f"POST /v1/score/{MODEL} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    ).encode()
    requests = []
    for row in rows:
        values = [None if math.isnan(v) else float(v) for v in row]
        body = json.dumps({"rows": [values]}, separators=(",", ":")).encode()
        requests.append(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return requests


HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class RawClient:
    """HTTP/1.1 over one blocking keep-alive socket: just enough for these two routes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.failures = 0

    def send(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        buffer = bytearray()
        while (length := common.response_length(buffer)) is None or len(buffer) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("server closed the connection")
            buffer += chunk
        if not buffer.startswith(b"HTTP/1.1 200"):
            self.failures += 1
        return bytes(buffer)


def _latencies(ops: dict[str, Callable[[int], object]], count: int) -> dict[str, list[float]]:
    """Microseconds per call of each op (the argument walks distinct rows), rotating blocks."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    for name in names:
        for i in range(200):
            ops[name](count + i)
    gc.collect()
    for index in range(count // BLOCK):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            op, into = ops[name], samples[name]
            for i in range(index * BLOCK, (index + 1) * BLOCK):
                begin = time.perf_counter_ns()
                op(i)
                into.append((time.perf_counter_ns() - begin) / 1_000)
    return samples


async def rate_of(ports: Sequence[int], requests: list[bytes], seconds: float) -> tuple[float, int]:
    """Requests/s of CONCURRENCY connections sending back to back (spread evenly over
    `ports`), and non-200 answers."""

    async def connection(offset: int, deadline: float) -> tuple[int, int]:
        port = ports[offset % len(ports)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = failed = 0
        try:
            while time.perf_counter() < deadline:
                writer.write(requests[(offset + done * CONCURRENCY) % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                length = common.response_length(head)
                if length is None:
                    raise RuntimeError("no header end")
                await reader.readexactly(length - len(head))
                failed += not head.startswith(b"HTTP/1.1 200")
                done += 1
        finally:
            writer.close()
        return done, failed

    gc.collect()
    start = time.perf_counter()
    deadline = start + seconds
    counts = await asyncio.gather(*(connection(i, deadline) for i in range(CONCURRENCY)))
    elapsed = time.perf_counter() - start
    return sum(c[0] for c in counts) / elapsed, sum(c[1] for c in counts)


def wait_scoring(port: int, request: bytes, timeout: float = 60.0) -> None:
    """Until the server scores with the promoted version (its views follow the log)."""
    client, deadline = RawClient(port), time.monotonic() + timeout
    while not client.send(request).startswith(b"HTTP/1.1 200"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} does not score: {client.send(request)[:400]!r}")
        time.sleep(0.2)


@contextlib.contextmanager
def _stack() -> Iterator[tuple[Path, str, str]]:
    from app.embedded import EmbeddedStack  # noqa: PLC0415

    # not under a pytest-style private folder: embedded PostgreSQL needs readable parents
    root = Path(tempfile.mkdtemp(prefix="ml-bench-http-"))
    stack = EmbeddedStack(root / "home")
    stack.start()
    try:
        yield root / "home", stack.database_url, stack.redis_url
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def measure(artifact: Path, rows: np.ndarray, count: int, seconds: float) -> dict[str, Any]:
    """H1 figures: per server, c=1 p50/p99 of health and score, c=16 requests/s."""
    import lightgbm  # noqa: PLC0415

    with _stack() as (home, database_url, redis_url):
        port = _free_port()
        setup = _uvicorn(_env(home, database_url, redis_url, port), port, worker=True)
        try:
            setup.wait_ready()
            admin = (home / "admin.token").read_text().strip()
            token, version = deploy(setup.url, admin, artifact)
        finally:
            setup.stop()
        servers = [_uvicorn(_env(home, database_url, redis_url, p := _free_port()), p, False)]
        if Path(GRANIAN).exists():
            servers.append(_granian(_env(home, database_url, redis_url, p := _free_port()), p))
        if _has_scorer_command():
            servers.append(_scorer(_env(home, database_url, redis_url, p := _free_port()), p))
        notes: list[str] = []
        try:
            for server in list(servers):
                try:
                    server.wait_ready()
                except RuntimeError as error:
                    if server is servers[0]:
                        raise
                    notes.append(f"{server.name} left out: {str(error)[-300:]}")
                    servers.remove(server)
                    server.stop()
            booster = lightgbm.Booster(model_file=str(artifact))
            figures = _measure(servers, rows, token, count, seconds, booster)
            return figures | {"version": version, "notes": notes}
        finally:
            for server in servers:
                server.stop()


def _health(client: RawClient, _: int) -> bytes:
    return client.send(HEALTH)


def _score(client: RawClient, requests: list[bytes], i: int) -> bytes:
    return client.send(requests[i % len(requests)])


def _measure(
    servers: list[Server],
    rows: np.ndarray,
    token: str,
    count: int,
    seconds: float,
    booster: Any,
) -> dict[str, Any]:
    requests = score_requests(rows, token)
    n = len(requests)
    for server in servers:
        wait_scoring(server.port, requests[0])
    checked = _parity(servers[0].port, requests[:200], rows[:200], booster)
    clients = {s.name: RawClient(s.port) for s in servers}
    http = httpx.Client(base_url=servers[0].url, headers={"Authorization": f"Bearer {token}"})
    bodies = [json.loads(r.partition(b"\r\n\r\n")[2]) for r in requests]
    ops: dict[str, Callable[[int], object]] = {}
    for name, client in clients.items():
        ops[f"{name}_health"] = functools.partial(_health, client)
        ops[f"{name}_score"] = functools.partial(_score, client, requests)
    ops["uvicorn_health_httpx"] = lambda _: http.get("/health")
    ops["uvicorn_score_httpx"] = lambda i: http.post(f"/v1/score/{MODEL}", json=bodies[i % n])
    samples = _latencies(ops, count)
    http.close()
    figures: dict[str, Any] = {"c1": {}, "c16_rps": {}, "parity_max_abs_diff": checked}
    for op, values in samples.items():
        figures["c1"][op] = {f"p{q}_us": round(common.percentile(values, q), 1) for q in (50, 99)}
    figures["failures"] = sum(c.failures for c in clients.values())
    rates: dict[str, list[float]] = {}
    for round_ in range(ROUNDS):
        order = servers if round_ % 2 == 0 else servers[::-1]
        for server in order:
            for route, reqs in (("score", requests), ("health", [HEALTH])):
                rate, failed = common.run(rate_of([server.port], reqs, seconds))
                rates.setdefault(f"{server.name}_{route}", []).append(rate)
                figures["failures"] += failed
    figures["c16_rps"] = {k: round(common.median(v)) for k, v in rates.items()}
    c1 = figures["c1"]
    for server in servers:
        ratio = c1[f"{server.name}_score"]["p50_us"] / c1[f"{server.name}_health"]["p50_us"]
        figures[f"{server.name}_ratio"] = round(ratio, 2)
    figures["ratio"] = figures["uvicorn_ratio"]  # H1: the server `serve` runs
    figures["servers"] = [s.name for s in servers]
    return figures


def _parity(port: int, requests: list[bytes], rows: np.ndarray, booster: Any) -> float:
    """Largest |HTTP score - LightGBM| over the rows (JSON carries float64 exactly)."""
    client = RawClient(port)
    scores = [json.loads(client.send(r).partition(b"\r\n\r\n")[2])["scores"][0] for r in requests]
    return float(np.max(np.abs(np.array(scores) - booster.predict(rows, num_threads=1))))


def report_lines(figures: dict[str, Any]) -> list[str]:
    """The H1 block of the bench's report."""
    c1 = figures["c1"]
    lines = [
        f"H1  HTTP on the {figures.get('trees', '?')}-tree model (version {figures['version']}),"
        f" servers: {', '.join(figures['servers'])}; non-200 answers: {figures['failures']};"
        f" max |HTTP score - lightgbm| = {figures['parity_max_abs_diff']:.3g}",
        f"    concurrency 1{'':21}{'p50 µs':>9}{'p99 µs':>9}",
        *(f"    {op:<34}{v['p50_us']:>9}{v['p99_us']:>9}" for op, v in c1.items()),
        f"    concurrency {CONCURRENCY}, requests/s (median of {ROUNDS} rounds)",
        *(f"    {op:<34}{rate:>9}" for op, rate in figures["c16_rps"].items()),
    ]
    ratios = {k.removesuffix("_ratio"): v for k, v in figures.items() if k.endswith("_ratio")}
    lines.append("    score/health p50: " + ", ".join(f"{k} {v}x" for k, v in ratios.items()))
    return lines + [f"    note: {note}" for note in figures.get("notes", [])]

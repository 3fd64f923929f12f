"""A client generated from openapi/openapi.json drives a live server through the whole story.

Generated clients sent the multipart uploads' files as text fields (the bodies were bare
objects) and got 422. Here openapi-python-client generates a package from the committed
document, and only its functions and models are used, with no hand-written request: create
a model, register a version with its artifact, wait for the compile job, approve, promote,
score, read the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
import pytest

from app.settings import Settings
from tests.http.governance_helpers import lightgbm_model_bytes
from tests.procs import kill_group
from tests.workers.jobs_helpers import CLI, process_env

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "ledger_client"
T = TypeVar("T")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package openapi-python-client makes of the committed document, imported."""
    folder = tmp_path_factory.mktemp("generated")
    config = folder / "config.json"
    config.write_text(json.dumps({"post_hooks": []}))  # no formatter needed to import it
    result = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(ROOT / "openapi" / "openapi.json"),
            "--meta",
            "none",
            "--output-path",
            str(folder / PACKAGE),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # a warning means a part of the document the generator could not read: a gap
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


class LiveServer:
    """`model-ledger serve --worker` on the test's database and Redis, on a free port."""

    def __init__(self, settings: Settings) -> None:
        self.process = subprocess.Popen(
            [CLI, "serve", "--worker"],
            env=process_env(
                settings,
                MODEL_LEDGER_PORT="0",
                MODEL_LEDGER_LOG_LEVEL="warning",
                PYTHONUNBUFFERED="1",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    async def url(self, seconds: float = 60.0) -> str:
        deadline = time.monotonic() + seconds
        while not (said := [ln for ln in list(self.output) if "API on" in ln]):
            assert self.process.poll() is None, "".join(self.output)
            assert time.monotonic() < deadline, "".join(self.output)
            await asyncio.sleep(0.05)
        return said[0].split(" on ", 1)[1].split()[0]

    def stop(self) -> None:
        kill_group(self.process.pid)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """A live server's URL and the admin token its first start wrote."""
    server = LiveServer(settings)
    try:
        url = await server.url()
        yield url, (settings.home / "admin.token").read_text().strip()
    finally:
        server.stop()


async def until(probe: Callable[[], Awaitable[T | None]], seconds: float = 60.0) -> T:
    """The first non-None answer of `probe`, asked until a deadline."""
    deadline = time.monotonic() + seconds
    while (found := await probe()) is None:
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)
    return found


def _module(generated: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{generated.__name__}.{name}")


async def test_a_generated_client_drives_the_whole_story(
    generated: ModuleType, live: tuple[str, str]
) -> None:
    url, admin_token = live
    api = {
        name: _module(generated, f"api.{tag}.{name}")
        for tag, names in {
            "auth": ["create_token"],
            "models": [
                "create_model",
                "register_version",
                "decide_version",
                "promote",
                "get_version",
                "list_models",
                "model_history",
                "upload_dataset",
            ],
            "jobs": ["get_job"],
            "scoring": ["score"],
        }.items()
        for name in names
    }
    m = _module(generated, "models")
    async with contextlib.AsyncExitStack() as clients:

        async def client(token: str) -> Any:
            made = generated.AuthenticatedClient(base_url=url, token=token)
            return await clients.enter_async_context(made)

        admin = await client(admin_token)
        ready = _module(generated, "api.operations.ready")

        async def answers() -> bool | None:
            # the port is bound before the server listens: refused until then
            with contextlib.suppress(httpx.TransportError):
                return (await ready.asyncio_detailed(client=admin)).status_code == 200 or None
            return None

        await until(answers)

        async def token(role: str, subject: str) -> Any:
            issued = await api["create_token"].asyncio(
                client=admin, body=m.TokenCreate(subject=subject, role=m.TokenCreateRole(role))
            )
            assert isinstance(issued, m.TokenCreated), issued
            return await client(issued.token)

        ci = await token("ci", "pipeline")
        approver = await token("approver", "risk-officer")
        await _story(api, admin, ci, approver)


async def _story(api: dict[str, Any], admin: Any, ci: Any, approver: Any) -> None:
    """create → upload (a version, a dataset) → compile → approve → promote → score →
    history, all generated."""
    m = importlib.import_module(f"{PACKAGE}.models")
    files = importlib.import_module(f"{PACKAGE}.types")

    created = await api["create_model"].asyncio_detailed(
        client=ci,
        body=m.ModelCreate(name="fraud", risk_tier=m.ModelCreateRiskTier.LOW, owner="fraud-team"),
    )
    assert created.status_code == 201, created.content

    # the upload: a file part and a JSON part, as the document describes them
    body = m.RegisterVersionBody(
        artifact=files.File(
            payload=io.BytesIO(lightgbm_model_bytes()),
            file_name="model.txt",
            mime_type="text/plain",
        ),
        metadata=m.VersionMetadata(
            format_=m.VersionMetadataFormat.LIGHTGBM,
            metrics=m.VersionMetadataMetrics.from_dict({"auc": 0.91}),
            lineage=m.LineageIn(git_commit="abc123"),
        ),
    )
    csv = b"amount,age,label\n1.5,30,1\n0.2,41,0\n"
    dataset = await api["upload_dataset"].asyncio(
        client=ci,
        body=m.UploadDatasetBody(
            file=files.File(payload=io.BytesIO(csv), file_name="d.csv", mime_type="text/csv")
        ),
    )
    assert isinstance(dataset, m.DatasetOut), dataset
    assert (dataset.rows, dataset.columns) == (2, ["amount", "age", "label"])

    registered = await api["register_version"].asyncio_detailed("fraud", client=ci, body=body)
    assert registered.status_code == 201, registered.content
    assert isinstance(registered.parsed, m.VersionCreated)
    version, job_id = registered.parsed.version, registered.parsed.compile_job_id

    async def compiled() -> Any:
        job = await api["get_job"].asyncio(job_id, client=ci)
        assert job.status != "failed", job
        return job if job.status == "succeeded" else None

    job = await until(compiled)
    # the job view is typed by kind: a compile job's result is its certificate
    assert isinstance(job, m.CompileJob) and isinstance(job.result, m.CompileResult)
    assert job.result.max_abs_diff <= job.result.tolerance

    decided = await api["decide_version"].asyncio(
        "fraud",
        version,
        client=approver,
        body=m.DecisionCreate(decision=m.DecisionCreateDecision.APPROVE, comment="reviewed"),
    )
    assert isinstance(decided, m.DecisionOut) and decided.approver == "risk-officer", decided

    promoted = await api["promote"].asyncio_detailed(
        "fraud", client=ci, body=m.PromotionCreate(version=version, environment="production")
    )
    assert promoted.status_code == 201, promoted.content
    assert isinstance(promoted.parsed, m.DeploymentOut) and promoted.parsed.champion == version

    rows = m.ScoreRequest(rows=[[0.5, -1.0, 3.0, 1.0], [-2.0, 0.1, 7.0, 0.0]])

    async def scored() -> Any:
        answer = await api["score"].asyncio_detailed("fraud", client=admin, body=rows)
        return answer.parsed if answer.status_code == 200 else None

    scores = await until(scored, seconds=10)
    assert isinstance(scores, m.ScoreOut), scores
    assert (scores.version, len(scores.scores), len(scores.prediction_ids)) == (version, 2, 2)
    assert all(0.0 < s < 1.0 for s in scores.scores)

    listed = await api["list_models"].asyncio(client=ci)
    assert isinstance(listed, m.ModelList) and [x.name for x in listed.models] == ["fraud"]
    seen = await api["get_version"].asyncio("fraud", version, client=ci)
    assert isinstance(seen, m.VersionView) and seen.state == "approved", seen

    history = await api["model_history"].asyncio("fraud", client=admin)
    assert isinstance(history, m.HistoryOut), history
    kinds = [e.type_ for e in history.events]
    for kind in ("version.registered", "version.compiled", "version.approved"):
        assert kind in kinds, kinds
    assert kinds[-1] == "deployment.changed", kinds

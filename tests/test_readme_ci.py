"""The README's "Passing every gate from CI" block, run verbatim with bash against a fresh
`model-ledger serve` (embedded stack, its in-process worker running the jobs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import lightgbm
import numpy as np
import pytest

from tests.test_serve import Server

pytestmark = pytest.mark.processes

README = Path(__file__).parents[1] / "README.md"
FEATURES = ["amount", "hour", "tenure", "utilization"]


def readme_block() -> str:
    """The first bash block of the README's section on passing every gate."""
    text = README.read_text()
    section = text[text.index("## Passing every gate from CI") :]
    found = re.search(r"```bash\n(.*?)\n```", section, re.DOTALL)
    assert found is not None, "the section has no bash block"
    return found.group(1)


def write_model_and_dataset(folder: Path) -> None:
    """`model.txt` and `eval.csv` as the README describes them: defaults that do not depend
    on the age band, so the fairness check passes."""
    rng = np.random.default_rng(12)
    rows = 4_000
    x = np.column_stack(
        [
            rng.lognormal(4, 1, rows),
            rng.integers(0, 24, rows).astype(float),
            rng.integers(0, 240, rows).astype(float),
            rng.uniform(0, 1, rows),
        ]
    )
    risk = 4 * (x[:, 3] - 0.5) - (x[:, 2] - 120) / 120
    y = (risk + rng.normal(0, 0.5, rows) > 0).astype(int)
    booster = lightgbm.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 12},
        lightgbm.Dataset(x, y, feature_name=FEATURES),
        num_boost_round=30,
    )
    booster.save_model(folder / "model.txt")
    bands = rng.choice(["18-30", "31-50", "51+"], rows)
    lines = [",".join([*FEATURES, "age_band", "is_default"])]
    lines += [
        ",".join([*(f"{v:.6g}" for v in values), band, str(label)])
        for values, band, label in zip(x, bands, y, strict=True)
    ]
    (folder / "eval.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def home() -> Iterator[Path]:
    # not under pytest's tmp folder (see tests/test_serve.py)
    path = Path(tempfile.mkdtemp(prefix="model-ledger-readme-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


def test_the_readme_sequence_takes_a_high_risk_version_to_production(
    home: Path, tmp_path: Path
) -> None:
    write_model_and_dataset(tmp_path)
    server = Server(home)
    try:
        server.wait_ready()
        admin = (home / "admin.token").read_text().strip()
        # python3 (the block's JSON reader) is this environment's
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        env = {"PATH": path, "HOME": str(tmp_path), "URL": server.url, "ADMIN": admin}
        ran = subprocess.run(
            ["bash", "-c", readme_block()],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr + "".join(server.output)
        dry_run, promoted = (line for line in ran.stdout.splitlines() if line.strip())
        assert '"allowed":false' in dry_run and "0 of 2 required approvals" in dry_run
        assert '"champion":1' in promoted and '"environment":"production"' in promoted
        headers = {"Authorization": f"Bearer {admin}"}
        model = httpx.get(f"{server.url}/v1/models/credit", headers=headers).json()
        assert model["deployments"]["production"]["champion"] == 1
        version = model["versions"][0]
        assert version["state"] == "approved" and version["compliance"]["passed"]
        assert [a["counts"] for a in version["approvals"]] == [True, True]
    finally:
        server.stop()

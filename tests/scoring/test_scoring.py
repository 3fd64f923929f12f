"""POST /v1/score/{name}: the deployed version's real library, scores equal to LightGBM's."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import httpx
import numpy as np
import skops.io
from sklearn.ensemble import RandomForestClassifier

from app.resources import Resources
from tests.conftest import TokenFactory
from tests.http.governance_helpers import create_model, register_version
from tests.scoring.helpers import (
    FEATURES,
    MERCHANTS,
    Built,
    as_matrix,
    built,
    deployed,
    promote,
    record_library,
    rows_with_missing,
    score,
)
from workers.ml.compile import compile_model


async def test_one_row_and_a_batch_score_exactly_as_lightgbm_with_null_as_missing(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, version = await deployed(client, auth, resources)
    booster = built("seed0").booster
    rows = rows_with_missing(300, seed=3)
    assert any(v is None for row in rows for v in row)

    one = await score(client, scorer, "fraud", {"rows": rows[:1]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == "fraud" and body["version"] == version
    assert body["library_sha256"] == built("seed0").library_sha256
    assert body["arm"] == "champion"
    assert body["scores"] == booster.predict(as_matrix(rows[:1])).tolist()
    assert uuid.UUID(body["prediction_ids"][0]).version == 7

    batch = await score(client, scorer, "fraud", {"rows": rows})
    assert batch.status_code == 200, batch.text
    scores = batch.json()["scores"]
    # bit for bit: the library's parity with LightGBM is certified at zero difference here
    assert scores == booster.predict(as_matrix(rows)).tolist()
    ids = batch.json()["prediction_ids"]
    assert len(ids) == len(set(ids)) == 300


async def test_features_by_name_map_categories_and_treat_unknown_as_missing(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources, "categorical")
    booster = built("categorical").booster
    named = {"amount": 1.2, "age": None, "hour": -0.3, "merchant": "travel"}
    found = await score(client, scorer, "fraud", {"features": dict(reversed(named.items()))})
    assert found.status_code == 200, found.text
    code = float(MERCHANTS.index("travel"))
    assert found.json()["scores"] == booster.predict(np.array([[1.2, np.nan, -0.3, code]])).tolist()

    unseen = await score(client, scorer, "fraud", {"features": {**named, "merchant": "casino"}})
    nulled = await score(client, scorer, "fraud", {"features": {**named, "merchant": None}})
    missing = booster.predict(np.array([[1.2, np.nan, -0.3, np.nan]])).tolist()
    assert unseen.json()["scores"] == nulled.json()["scores"] == missing
    # the same row by position, with the category's code
    by_row = await score(client, scorer, "fraud", {"rows": [[1.2, None, -0.3, code]]})
    assert by_row.json()["scores"] == found.json()["scores"]

    # this model learnt from NaNs: null is missing, not zero, and scores as LightGBM's NaN
    rows = rows_with_missing(300, seed=4)
    zeroed = [[0.0 if v is None else v for v in row] for row in rows]
    differ = booster.predict(as_matrix(rows)) != booster.predict(as_matrix(zeroed))
    assert differ.any()
    holed = (await score(client, scorer, "fraud", {"rows": rows})).json()["scores"]
    assert holed == booster.predict(as_matrix(rows)).tolist()
    zero_scores = (await score(client, scorer, "fraud", {"rows": zeroed})).json()["scores"]
    assert (np.array(holed) != np.array(zero_scores)).tolist() == differ.tolist()


async def test_wrong_inputs_are_422_and_a_malformed_body_400(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources, "categorical")
    full = dict.fromkeys(FEATURES, 0.5)
    cases = {
        "short row": {"rows": [[1.0, 2.0, 3.0]]},
        "one short row in a batch": {"rows": [[1.0, 2.0, 3.0, 1.0], [1.0, 2.0]]},
        "no rows": {"rows": []},
        "unknown feature": {"features": {**full, "colour": 1.0}},
        "missing feature": {"features": {k: v for k, v in full.items() if k != "hour"}},
        "text for a number": {"features": {**full, "amount": "lots"}},
        "both": {"rows": [[1.0, 2.0, 3.0, 1.0]], "features": full},
        "neither": {},
    }
    for case, body in cases.items():
        response = await score(client, scorer, "fraud", body)
        assert response.status_code == 422, (case, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    unknown = await score(client, scorer, "fraud", {"features": {**full, "colour": 1.0}})
    assert "unknown: colour" in unknown.json()["detail"]
    missing = await score(client, scorer, "fraud", {"features": {"amount": 1.0}})
    assert "missing: age, hour, merchant" in missing.json()["detail"]
    too_many = await score(client, scorer, "fraud", {"rows": [[0.0] * 4] * 10_001})
    assert too_many.status_code == 422, too_many.text
    for malformed in (b"{", b'{"rows": [["a"]]}', b'{"rowz": []}'):
        response = await client.post(
            "/v1/score/fraud?environment=staging",
            content=malformed,
            headers={**scorer, "content-type": "application/json"},
        )
        assert response.status_code == 400, response.text


async def test_nothing_deployed_is_404_and_only_scorers_and_admins_score(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources)
    row = {"rows": [[0.1, 0.2, 0.3, 1.0]]}
    # deployed to staging only: production (the default) has nothing
    production = await client.post("/v1/score/fraud", json=row, headers=scorer)
    assert production.status_code == 404, production.text
    assert (await score(client, scorer, "nobody", row)).status_code == 404
    assert (await score(client, await auth("admin"), "fraud", row)).status_code == 200
    assert (await score(client, await auth("ci"), "fraud", row)).status_code == 403


async def test_explain_gives_contributions_that_sum_to_the_raw_margin(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    scorer, _ = await deployed(client, auth, resources, "categorical")
    booster = built("categorical").booster
    rows = rows_with_missing(20, seed=5)
    explained = await score(client, scorer, "fraud", {"rows": rows}, explain="true")
    assert explained.status_code == 200, explained.text
    body = explained.json()
    margins = booster.predict(as_matrix(rows), raw_score=True)
    assert len(body["contributions"]) == len(rows)
    for contribution, margin, probability in zip(
        body["contributions"], margins, body["scores"], strict=True
    ):
        assert set(contribution) == {*FEATURES, "bias"}
        assert math.isclose(sum(contribution.values()), margin, abs_tol=1e-9)
        assert math.isclose(1 / (1 + math.exp(-margin)), probability, abs_tol=1e-12)
    one = await score(
        client, scorer, "fraud", {"features": dict.fromkeys(FEATURES, None)}, explain="true"
    )
    assert one.status_code == 200 and len(one.json()["contributions"]) == 1
    plain = await score(client, scorer, "fraud", {"rows": rows[:2]})
    assert "contributions" not in plain.json()


def forest_build(folder: Path) -> tuple[RandomForestClassifier, Built]:
    """A binary random forest, as a skops archive, and its certified library."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=20, max_depth=5, random_state=9).fit(x, y)
    archive = folder / "forest.skops"
    skops.io.dump(forest, archive)
    outcome = compile_model(archive, "sklearn-skops", folder / "build", tolerance=1e-9)
    assert outcome.certificate.passed and outcome.certificate.reference.startswith("scikit-learn")
    return forest, Built(
        artifact=archive.read_bytes(),
        library=Path(outcome.library_path).read_bytes(),
        library_sha256=outcome.library_sha256,
        max_abs_diff=outcome.certificate.max_abs_diff,
        rows_checked=outcome.certificate.rows_checked,
        categories={},
    )


async def test_a_binary_random_forest_scores_p_class_1_like_every_binary_classifier(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources, tmp_path: Path
) -> None:
    forest, compiled = forest_build(tmp_path)
    ci = await auth("ci")
    assert (await create_model(client, ci, "forest")).status_code == 201
    metadata = {"format": "sklearn-skops", "metrics": {"auc": 0.9}}
    created = await register_version(
        client, ci, "forest", artifact=compiled.artifact, metadata=metadata
    )
    assert created.status_code == 201, created.text
    await record_library(resources, "forest", created.json()["version"], compiled)
    await promote(client, ci, "forest", created.json()["version"])
    await resources.scoring.scorer.refresh()
    rows = np.random.default_rng(10).normal(size=(50, 4))

    scored = await score(client, await auth("scorer"), "forest", {"rows": rows.tolist()})

    assert scored.status_code == 200, scored.text
    scores = scored.json()["scores"]
    # one number per row, P(class 1) exactly as the forest's own predict_proba gives it
    assert all(isinstance(s, float) for s in scores)
    assert np.array_equal(np.array(scores), forest.predict_proba(rows)[:, 1])
    one = await score(client, await auth("scorer"), "forest", {"rows": rows[:1].tolist()})
    assert one.json()["scores"] == [forest.predict_proba(rows[:1])[0, 1]]
    assert one.json()["arm"] == "champion" and one.json()["environment"] == "staging"

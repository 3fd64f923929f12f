"""The OpenAPI document is valid OpenAPI 3.1 and describes bodies as clients must send them.

`openapi-spec-validator` failed on the committed document (the `ETag` header of
`GET /v1/models/{name}` had no schema); generated clients sent the multipart uploads' files
as text fields (the bodies were bare objects). The committed document and the one the
running app serves are both checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from app.scorer_app import create_scorer_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED: dict[str, Any] = json.loads((ROOT / "openapi" / "openapi.json").read_text())


async def _documents(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    live = await client.get("/schema/openapi.json")
    assert live.status_code == 200, live.text
    return {"committed": COMMITTED, "live": live.json()}


async def test_the_committed_and_the_live_document_are_valid_openapi_3_1(
    client: httpx.AsyncClient,
) -> None:
    for name, document in (await _documents(client)).items():
        assert document["openapi"].startswith("3.1"), name
        validate(document)  # raises on the first violation


def test_the_scorer_process_document_is_valid_openapi_3_1() -> None:
    """`model-ledger scorer` serves a document of its own (score, feedback, operations)."""
    validate(create_scorer_app(Settings()).openapi_schema.to_schema())


def test_the_validator_refuses_a_header_without_a_schema() -> None:
    """The check above is not vacuous: the defect it was added for fails it."""
    broken = json.loads(json.dumps(COMMITTED))
    headers = broken["paths"]["/v1/models/{name}"]["get"]["responses"]["200"]["headers"]
    del headers["ETag"]["schema"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def _body(document: dict[str, Any], path: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]
    return schema


async def test_multipart_uploads_describe_their_parts(client: httpx.AsyncClient) -> None:
    for name, document in (await _documents(client)).items():
        version = _body(document, "/v1/models/{name}/versions")
        assert version["required"] == ["artifact", "metadata"], name
        artifact = version["properties"]["artifact"]
        assert (artifact["type"], artifact["format"]) == ("string", "binary")
        assert artifact["contentMediaType"] == "application/octet-stream"
        assert version["properties"]["metadata"] == {"$ref": "#/components/schemas/VersionMetadata"}
        metadata = document["components"]["schemas"]["VersionMetadata"]
        assert metadata["required"] == ["format"]
        assert set(metadata["properties"]) == {
            "format",
            "feature_names",
            "metrics",
            "params",
            "lineage",
        }
        dataset = _body(document, "/v1/datasets")
        assert dataset["required"] == ["file"]
        assert dataset["properties"]["file"]["format"] == "binary"


def _ok(document: dict[str, Any], path: str, method: str = "get") -> dict[str, Any]:
    responses = document["paths"][path][method]["responses"]
    schema: dict[str, Any] = next(
        r["content"]["application/json"]["schema"]
        for status, r in responses.items()
        if status.startswith("2")
    )
    return schema


def test_list_responses_are_named_schemas() -> None:
    """`{"models": [...]}` and its kin were declared as maps of arrays of anything."""
    schemas = COMMITTED["components"]["schemas"]
    for path, name, member, item in (
        ("/v1/models", "ModelList", "models", "ModelView"),
        ("/v1/models/{name}/versions", "VersionList", "versions", "VersionView"),
        ("/v1/policies", "PolicyList", "policies", "PolicyOut"),
    ):
        assert _ok(COMMITTED, path) == {"$ref": f"#/components/schemas/{name}"}, path
        assert schemas[name]["required"] == [member]
        assert schemas[name]["properties"][member] == {
            "items": {"$ref": f"#/components/schemas/{item}"},
            "type": "array",
        }


def test_job_views_are_a_union_tagged_by_kind_with_typed_results() -> None:
    schemas = COMMITTED["components"]["schemas"]
    variants = [v["$ref"].rsplit("/", 1)[1] for v in _ok(COMMITTED, "/v1/jobs/{job_id}")["oneOf"]]
    kinds = {}
    for variant in variants:
        properties = schemas[variant]["properties"]
        kinds[properties["kind"]["const"]] = properties["result"]["oneOf"][0]["$ref"]
    assert kinds == {
        "train": "#/components/schemas/TrainResult",
        "compile": "#/components/schemas/CompileResult",
        "compliance": "#/components/schemas/ComplianceResult",
        "drift": "#/components/schemas/DriftResult",
        "bandit": "#/components/schemas/BanditResult",
        "performance": "#/components/schemas/PerformanceResult",
        "data_quality": "#/components/schemas/DataQualityResult",
        "experiment": "#/components/schemas/ExperimentResult",
    }

"""Uploads: model versions (artifact + metadata) and datasets, under the upload size limit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath

from app.http.auth import event_meta, idempotency, requires
from app.http.bodies import decode_any_json
from app.http.form_docs import Parts
from app.http.problems import never_answers
from app.http.schemas import VersionCreated, VersionList, VersionMetadata
from app.services.datasets import Datasets
from app.services.governance import Governance
from app.services.registry import Registry
from app.services.uploads import Uploads
from app.services.views import render_model
from domain import commands as cmd
from domain import events as ev
from domain.datasets import DatasetVersion, require_name
from domain.errors import InvalidInput

_CHUNK = 1 << 20
_VERSION_PARTS = Parts(
    files={"artifact": "the model file (LightGBM text, XGBoost JSON or a skops file)"},
    json={"metadata": (VersionMetadata, "the version's format, features, metrics and lineage")},
)
_DATASET_PARTS = Parts(
    files={"file": "the dataset, CSV or Parquet"},
    text={
        "name": "optional: record the upload as the next version of this named dataset "
        "(1-100 of a-z, 0-9, '.', '_', '-'); the latest version of a name is what a "
        "retraining policy trains on"
    },
)
VersionForm = Annotated[
    dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART), _VERSION_PARTS
]
DatasetForm = Annotated[
    dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART), _DATASET_PARTS
]


class DatasetOut(msgspec.Struct, frozen=True, kw_only=True):
    sha256: str
    rows: int
    columns: list[str]
    format: str
    size: int
    # with a `name` part: the name and the version the upload is (a file that is the name's
    # latest version already is that version, not a new one)
    name: str | None = None
    version: int | None = None


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


def _file(data: dict[str, Any], part: str) -> UploadFile:
    upload = data.get(part)
    if not isinstance(upload, UploadFile):
        raise InvalidInput(f"multipart part {part!r} (a file) is required", field=part)
    return upload


class DatasetSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A named dataset in the list: its latest version and how many versions it has."""

    name: str
    latest: DatasetVersion
    versions: int


class DatasetList(msgspec.Struct, frozen=True, kw_only=True):
    """Every named dataset, by name."""

    datasets: list[DatasetSummary]


class UploadController(Controller):
    """Versions (listed, and registered with their artifact) and dataset uploads.

    Its router allows bodies up to the upload limit; the JSON routes keep the small one.
    """

    tags = ["models"]

    @post(
        "/v1/models/{name:str}/versions",
        operation_id="registerVersion",
        guards=[requires("admin", "ci")],
    )
    async def register_version(
        self,
        name: FromPath[str],
        data: VersionForm,
        request: Request[Any, Any, Any],
        *,
        uploads: NamedDependency[Uploads],
        registry: NamedDependency[Registry],
        governance: NamedDependency[Governance],
    ) -> VersionCreated:
        """Register a version: part `artifact` (the model file), part `metadata` (JSON)."""
        raw = data.get("metadata")
        if raw is None:
            raise InvalidInput("multipart part 'metadata' (JSON) is required", field="metadata")
        text = raw if isinstance(raw, (str, bytes)) else await raw.read()
        encoded = text.encode() if isinstance(text, str) else text
        decode_any_json(encoded, "metadata")  # 400 unless JSON (UTF-8, not nested too deeply)
        if b"\x00" in encoded or b"\\u0000" in encoded:
            raise InvalidInput("NUL characters are not accepted in metadata", field="metadata")
        try:
            metadata = msgspec.json.decode(encoded, type=VersionMetadata)
        except msgspec.ValidationError as error:
            raise InvalidInput(f"metadata: {error}", field="metadata") from error
        if not governance.knows_model(name):  # a model this process saw exists: no read
            await registry.model_state(name)  # 404 before storing anything
        stored, info = await uploads.model(_chunks(_file(data, "artifact")), metadata.format)
        lineage = ev.Lineage(
            git_commit=metadata.lineage.git_commit,
            ci_run_url=metadata.lineage.ci_run_url,
            dataset_sha256=metadata.lineage.dataset_sha256,
        )
        command = cmd.RegisterVersion(
            name=name,
            compile_job_id=str(uuid.uuid4()),
            artifact_sha256=stored.sha256,
            artifact_size=stored.size,
            format=metadata.format,
            model_feature_names=info.feature_names,
            num_trees=info.num_trees,
            feature_names=metadata.feature_names,
            metrics=metadata.metrics,
            params=metadata.params,
            lineage=lineage,
        )
        outcome = await governance.handle(
            command,
            event_meta(request),
            idempotency(request, {"artifact": stored.sha256, "metadata": metadata}),
        )
        registered, job = outcome.events[0].event, outcome.events[-1].event
        assert isinstance(registered, ev.VersionRegistered)
        return VersionCreated(
            version=registered.version,
            artifact_sha256=registered.artifact_sha256,
            state="registered",
            compile_job_id=job.job_id if isinstance(job, ev.JobRequested) else None,
            position=outcome.position,
        )

    @get("/v1/models/{name:str}/versions", operation_id="listVersions")
    async def list_versions(
        self,
        name: FromPath[str],
        registry: NamedDependency[Registry],
        now: NamedDependency[datetime],
    ) -> VersionList:
        """Every version of a model."""
        model, policies = await registry.model_state(name)
        return VersionList(versions=render_model(model, policies, now).versions)

    @get("/v1/datasets", operation_id="listDatasets")
    async def list_datasets(self, datasets: NamedDependency[Datasets]) -> DatasetList:
        """Every named dataset, by name, with its latest version (what a retraining policy
        trains on) and its number of versions (here, beside the upload: one path, one
        controller)."""
        summaries = []
        for found in await datasets.all():
            latest = found.latest()
            assert latest is not None
            summaries.append(
                DatasetSummary(name=found.name, latest=latest, versions=len(found.versions))
            )
        return DatasetList(datasets=summaries)

    @post(
        "/v1/datasets",
        operation_id="uploadDataset",
        guards=[requires("admin", "ci")],
        opt=never_answers(404),
    )
    async def upload_dataset(
        self,
        data: DatasetForm,
        request: Request[Any, Any, Any],
        uploads: NamedDependency[Uploads],
        datasets: NamedDependency[Datasets],
    ) -> DatasetOut:
        """Upload a CSV or Parquet dataset (part `file`), stored by its sha256; with a part
        `name`, also recorded as the next version of that named dataset."""
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidInput("multipart part 'name' must be text, not a file", field="name")
        if name is not None:
            require_name(name)  # 422 before storing anything
        stored, info = await uploads.dataset(_chunks(_file(data, "file")))
        out = DatasetOut(
            sha256=stored.sha256,
            rows=info.rows,
            columns=info.columns,
            format=info.format,
            size=stored.size,
        )
        if name is None:
            return out
        command = cmd.AddDatasetVersion(
            name=name,
            sha256=stored.sha256,
            rows=info.rows,
            columns=info.columns,
            format=info.format,
            size=stored.size,
        )
        added = await datasets.add(command, event_meta(request))
        return msgspec.structs.replace(out, name=name, version=added.version)

"""Uploaded files: checked, then stored by their digest, under the upload limit, off the loop."""

from __future__ import annotations

from collections.abc import AsyncIterable
from functools import partial

from app.services.artifacts import DatasetInfo, ModelInfo, inspect_dataset, inspect_model
from app.services.lightgbm_sandbox import LightGBMSandbox
from app.store.artifacts import ArtifactStore, StoredArtifact


class Uploads:
    """Model artifacts and datasets as the upload routes receive them.

    A file is checked before it is stored: one its check refuses is not kept.
    """

    def __init__(self, artifacts: ArtifactStore, sandbox: LightGBMSandbox, max_bytes: int) -> None:
        self._artifacts = artifacts
        self._sandbox = sandbox
        self._max_bytes = max_bytes

    async def model(
        self, chunks: AsyncIterable[bytes], fmt: str
    ) -> tuple[StoredArtifact, ModelInfo]:
        """Store a model file that reads as what it is (LightGBM files in the sandbox)."""
        check = partial(inspect_model, fmt=fmt, sandbox=self._sandbox)
        return await self._artifacts.put_checked(chunks, max_bytes=self._max_bytes, check=check)

    async def dataset(self, chunks: AsyncIterable[bytes]) -> tuple[StoredArtifact, DatasetInfo]:
        """Store a CSV or Parquet dataset and read its shape."""
        return await self._artifacts.put_checked(
            chunks, max_bytes=self._max_bytes, check=inspect_dataset
        )

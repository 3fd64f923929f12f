"""Uploaded files: stored by their digest under the upload limit, then checked off the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable

from app.services.artifacts import DatasetInfo, ModelInfo, inspect_dataset, inspect_model
from app.services.lightgbm_sandbox import LightGBMSandbox
from app.store.artifacts import ArtifactStore, StoredArtifact


class Uploads:
    """Model artifacts and datasets as the upload routes receive them."""

    def __init__(self, artifacts: ArtifactStore, sandbox: LightGBMSandbox, max_bytes: int) -> None:
        self._artifacts = artifacts
        self._sandbox = sandbox
        self._max_bytes = max_bytes

    async def model(
        self, chunks: AsyncIterable[bytes], fmt: str
    ) -> tuple[StoredArtifact, ModelInfo]:
        """Store a model file and read what it is (LightGBM files in the sandbox)."""
        stored = await self._artifacts.put_stream(chunks, max_bytes=self._max_bytes)
        info = await asyncio.to_thread(inspect_model, stored.path, fmt, self._sandbox)
        return stored, info

    async def dataset(self, chunks: AsyncIterable[bytes]) -> tuple[StoredArtifact, DatasetInfo]:
        """Store a CSV or Parquet dataset and read its shape."""
        stored = await self._artifacts.put_stream(chunks, max_bytes=self._max_bytes)
        return stored, await asyncio.to_thread(inspect_dataset, stored.path)

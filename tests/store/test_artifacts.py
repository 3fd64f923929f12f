"""The content-addressed artifact store and the validation of uploaded models and datasets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import random
import zipfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import lightgbm
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skops.io
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier

from app.services.artifacts import inspect_dataset, inspect_model
from app.store.artifacts import ArtifactStore
from domain.errors import InvalidInput, NotFound, PayloadTooLarge


async def stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def leftovers(root: Path) -> list[Path]:
    return sorted((root / "tmp").iterdir()) if (root / "tmp").exists() else []


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "sha256").rglob("*") if p.is_file())


# --- the store ---------------------------------------------------------------------------------


async def test_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    chunks = [os.urandom(70_000) for _ in range(40)]  # ~2.7 MB: several gathered writes
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()

    first = await store.put_stream(stream(chunks), max_bytes=len(data))
    assert (first.sha256, first.size) == (digest, len(data))
    assert first.path == tmp_path / "sha256" / digest[:2] / digest
    assert first.path.read_bytes() == data
    assert store.path_of(digest) == first.path and store.exists(digest)

    before = first.path.stat()
    again = await store.put_bytes(data)
    assert again == first
    after = first.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert stored_files(tmp_path) == [first.path] and leftovers(tmp_path) == []

    empty = await store.put_bytes(b"")
    assert empty.sha256 == hashlib.sha256(b"").hexdigest() and empty.size == 0


async def test_size_limit_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    at_limit = await store.put_stream(stream([b"a" * 600, b"b" * 400]), max_bytes=1000)
    assert at_limit.size == 1000
    with pytest.raises(PayloadTooLarge) as caught:
        await store.put_stream(stream([b"x" * 600, b"y" * 401]), max_bytes=1000)
    assert caught.value.code == "payload_too_large"
    assert leftovers(tmp_path) == [] and stored_files(tmp_path) == [at_limit.path]


async def test_failed_or_cancelled_upload_leaves_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (3 << 20)
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await store.put_stream(broken(), max_bytes=10 << 20)

    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"y" * (2 << 20)
        started.set()
        await asyncio.Event().wait()
        yield b""

    upload = asyncio.create_task(store.put_stream(stalled(), max_bytes=10 << 20))
    await started.wait()
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert leftovers(tmp_path) == [] and stored_files(tmp_path) == []


async def test_a_checked_upload_is_stored_only_when_its_check_accepts_it(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    chunks = [os.urandom(70_000) for _ in range(20)]  # a gathered write, then the rest
    data = b"".join(chunks)

    def measure(path: Path) -> int:
        assert path.parent == tmp_path / "tmp"  # before it is stored: not yet under its digest
        assert path.read_bytes() == data  # the whole upload
        return len(data) // 2

    stored, checked = await store.put_checked(stream(chunks), max_bytes=len(data), check=measure)
    assert checked == len(data) // 2 and stored.path.read_bytes() == data

    def refuse(path: Path) -> None:
        raise InvalidInput(f"not a model: {path.stat().st_size} bytes")

    with pytest.raises(InvalidInput, match="not a model: 5 bytes"):
        await store.put_checked(stream([b"other"]), max_bytes=10, check=refuse)
    assert not store.exists(hashlib.sha256(b"other").hexdigest())
    assert leftovers(tmp_path) == [] and stored_files(tmp_path) == [stored.path]


def test_lookups_validate_the_digest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(NotFound):
        store.path_of("ab" * 32)
    for bad in ("../../etc/passwd", "AB" * 32, "ab" * 31, "zz" * 32):
        with pytest.raises(InvalidInput):
            store.path_of(bad)
        assert not store.exists(bad)
    assert not store.exists("ab" * 32)


# --- models --------------------------------------------------------------------------------------


def reject(path: Path, fmt: str, *fragments: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        inspect_model(path, fmt)
    detail = caught.value.detail
    for fragment in fragments:
        assert fragment in detail, detail
    return detail


@pytest.fixture(scope="module")
def lightgbm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    data = lightgbm.Dataset(x, y, feature_name=["age", "income", "tenure"])
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1}
    booster = lightgbm.train(params, data, num_boost_round=3)
    path = tmp_path_factory.mktemp("lgb") / "model.txt"
    booster.save_model(path)
    return path


def test_lightgbm_model_accepted(lightgbm_model: Path) -> None:
    info = inspect_model(lightgbm_model, "lightgbm")
    assert info.format == "lightgbm"
    assert info.feature_names == ["age", "income", "tenure"] and info.num_features == 3
    assert (info.num_trees, info.objective) == (3, "binary")


def test_lightgbm_corrupted_files_rejected(lightgbm_model: Path, tmp_path: Path) -> None:
    text = lightgbm_model.read_bytes()
    cases = {
        # cut inside the trees, and inside the parameters (where LightGBM reads past the end)
        "mid-trees": (text[: text.index(b"Tree=2")], "truncated"),
        "mid-parameters": (text[: text.index(b"parameters:") + 100], "truncated"),
        # a NUL makes LightGBM's parser spin forever: refused before it gets there
        "nul": (text.replace(b"Tree=1", b"Tree=1\x00", 1), "binary (control) bytes"),
        # printable damage that passes the cheap checks: LightGBM aborts, in its child process
        "damaged": (text.replace(b"Tree=1", b"Tree-1", 1), "LightGBM crashed"),
        "binary": (random.Random(1).randbytes(4096), "does not start with the line 'tree'"),
    }
    for name, (content, fragment) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        reject(path, "lightgbm", "not a LightGBM text model", fragment)


@pytest.mark.parametrize(
    ("param", "fragment"),
    [("zero_as_missing", "zero_as_missing=True"), ("linear_tree", "linear_tree=True")],
)
def test_lightgbm_parameters_that_cannot_compile_are_refused_by_name(
    tmp_path: Path, param: str, fragment: str
) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    x[x < 0.3] = 0.0  # zeros a zero_as_missing model routes as missing
    y = (x[:, 0] + x[:, 1] > 0.4).astype(int)
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1}
    booster = lightgbm.train(params | {param: True}, lightgbm.Dataset(x, y), num_boost_round=3)
    path = tmp_path / "model.txt"
    booster.save_model(path)
    reject(path, "lightgbm", "not a LightGBM text model", fragment)
    # the same data without the parameter is accepted
    plain = lightgbm.train(params, lightgbm.Dataset(x, y), num_boost_round=3)
    plain.save_model(path)
    assert inspect_model(path, "lightgbm").num_trees == 3


def xgboost_tree(tree_id: int, feature: int, threshold: float, left: float, right: float) -> dict:
    """One XGBoost JSON tree: a split on `feature` and two leaves."""
    return {
        "base_weights": [0.0, left, right],
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": [1, 0, 0],
        "id": tree_id,
        "left_children": [1, -1, -1],
        "loss_changes": [1.0, 0.0, 0.0],
        "parents": [2147483647, 0, 0],
        "right_children": [2, -1, -1],
        # a leaf's value sits in split_conditions
        "split_conditions": [threshold, left, right],
        "split_indices": [feature, 0, 0],
        "split_type": [0, 0, 0],
        "sum_hessian": [10.0, 5.0, 5.0],
        "tree_param": {"num_deleted": "0", "num_feature": "2", "num_nodes": "3"}
        | {"size_leaf_vector": "1"},
    }


def xgboost_model() -> dict:
    """A two-tree binary classifier over two features, as XGBoost 2 saves it."""
    trees = [xgboost_tree(0, 0, 0.5, -0.4, 0.4), xgboost_tree(1, 1, 1.5, -0.2, 0.2)]
    booster = {"gbtree_model_param": {"num_parallel_tree": "1", "num_trees": "2"}}
    booster |= {"iteration_indptr": [0, 1, 2], "tree_info": [0, 0], "trees": trees}
    learner_param = {"base_score": "5E-1", "boost_from_average": "1", "num_class": "0"}
    learner_param |= {"num_feature": "2", "num_target": "1"}
    learner = {
        "attributes": {},
        "feature_names": ["age", "income"],
        "feature_types": ["float", "float"],
        "gradient_booster": {"model": booster, "name": "gbtree"},
        "learner_model_param": learner_param,
        "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}},
    }
    return {"learner": learner, "version": [2, 1, 0]}


def test_xgboost_json_model(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text(json.dumps(xgboost_model()))
    info = inspect_model(good, "xgboost-json")
    assert info.feature_names == ["age", "income"] and info.num_features == 2
    assert (info.num_trees, info.objective) == (2, "binary:logistic")

    truncated = tmp_path / "truncated"
    truncated.write_text(json.dumps(xgboost_model())[:400])
    reject(truncated, "xgboost-json", "not an XGBoost JSON model", "truncated")
    broken = xgboost_model()
    broken["learner"]["gradient_booster"]["model"]["trees"][1]["left_children"] = [7, -1, -1]
    dangling = tmp_path / "dangling"
    dangling.write_text(json.dumps(broken))
    reject(dangling, "xgboost-json", "Treelite cannot import it", "Node with key 7")
    binary = tmp_path / "binary"
    binary.write_bytes(random.Random(2).randbytes(1024))
    reject(binary, "xgboost-json", "not a JSON object")


def dump_skops(tmp_path: Path, name: str, obj: object) -> Path:
    path = tmp_path / f"{name}.skops"
    skops.io.dump(obj, path)
    return path


def test_sklearn_skops_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0).fit(x, y)
    info = inspect_model(dump_skops(tmp_path, "forest", forest), "sklearn-skops")
    assert info.feature_names == ["x0", "x1", "x2", "x3"] and info.num_features == 4
    assert (info.num_trees, info.objective) == (4, "gini")

    # os.system inside a pipeline: refused from the schema, nothing is ever constructed
    evil = make_pipeline(FunctionTransformer(os.system), forest)
    reject(dump_skops(tmp_path, "evil", evil), "sklearn-skops", "allow-list", "system", "Pipeline")
    # skops itself trusts every scikit-learn estimator; the allow-list does not
    linear = LogisticRegression().fit(x, y)
    reject(dump_skops(tmp_path, "linear", linear), "sklearn-skops", "LogisticRegression")
    # on the allow-list as a forest's part, but Treelite does not compile a lone tree
    tree = DecisionTreeClassifier(max_depth=2).fit(x, y)
    reject(dump_skops(tmp_path, "tree", tree), "sklearn-skops", "DecisionTreeClassifier is not")
    unfitted = RandomForestClassifier(n_estimators=2)
    reject(dump_skops(tmp_path, "unfitted", unfitted), "sklearn-skops", "not fitted")

    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps(forest))
    reject(pickled, "sklearn-skops", "not a skops archive")
    reject(pickled, "onnx", "unknown model format")


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.skops"
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("schema.json", "w") as entry,
    ):
        for _ in range(64):
            entry.write(bytes(1 << 20))
    assert bomb.stat().st_size < 1 << 20  # 64 MB of schema in under one
    reject(bomb, "sklearn-skops", "zip bomb")

    # a real model's archive, deflated (skops stores it uncompressed), is no bomb
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 4))
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, x[:, 0] > 0)
    stored = dump_skops(tmp_path, "forest", forest)
    deflated = tmp_path / "deflated.skops"
    with (
        zipfile.ZipFile(stored) as source,
        zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for info in source.infolist():
            out.writestr(info.filename, source.read(info))
    assert deflated.stat().st_size < stored.stat().st_size
    assert inspect_model(deflated, "sklearn-skops").num_trees == 20


# --- datasets ------------------------------------------------------------------------------------


def test_csv_and_parquet_datasets(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text("age,income,label\n31,1200.5,1\n45,,0\n27,880,oops\n")
    info = inspect_dataset(csv)
    assert (info.format, info.rows, info.columns) == ("csv", 3, ["age", "income", "label"])

    table = pa.table({"age": list(range(1000)), "city": ["x", "y"] * 500})
    parquet = tmp_path / "data.parquet"
    pq.write_table(table, parquet, row_group_size=300)
    info = inspect_dataset(parquet)
    assert (info.format, info.rows, info.columns) == ("parquet", 1000, ["age", "city"])


def test_bad_datasets_rejected(tmp_path: Path) -> None:
    table = pa.table({"age": list(range(1000))})
    parquet = tmp_path / "whole.parquet"
    pq.write_table(table, parquet)
    cases = {
        "empty": (b"", "empty"),
        "header-only": (b"a,b\n", "no rows"),
        "ragged": (b"a,b\n1,2\n3\n", "not a readable CSV file"),
        "duplicates": (b"a,a\n1,2\n", "duplicate column names: a"),
        "binary": (random.Random(4).randbytes(4096), "not a readable CSV file"),
        "truncated-parquet": (parquet.read_bytes()[:300], "not a readable Parquet file"),
    }
    for name, (content, fragment) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InvalidInput) as caught:
            inspect_dataset(path)
        assert fragment in caught.value.detail, (name, caught.value.detail)

"""The model store in an S3-compatible bucket over real HTTP: moto's S3 server on a free port stands in
for MinIO or AWS. The registry pushes the real NanoDet through its own push path into the bucket;
another store with its own cache (another machine) lists it, and the detector loads and runs what its
``folder`` gives; a retire is seen there; a version is never pushed twice; a blob damaged in the bucket
is refused; a missing bucket and an unreachable endpoint say what to do."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from aimass.model_store import ModelStore, StoreError
from aimass.settings import DetectorSettings, RegistrySettings
from aimass_detector.engine import Detector
from aimass_detector.model import load_spec
from aimass_detector.serving import resolver
from aimass_registry.service import MemoryRouting, Registry
from aimass_registry.validate import PushOptions, PushRefused

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
from aimass.model_store_s3 import S3ModelStore  # noqa: E402  (after the skip: it needs nothing, boto3 does)

pytestmark = pytest.mark.integration
NANODET = Path(__file__).resolve().parents[2] / "models" / "nanodet-g-416"
REF = "nanodet-g-416:1"
BUCKET = "aimass-models"
URL = f"s3://{BUCKET}/site-a/models"


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """moto's S3 server on a free port, dummy credentials in the environment (nothing from this
    machine's ~/.aws), the bucket created; stopped after the test."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key-never-shown")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        # moto keeps its buckets in this process, beyond the server: empty them for the next test.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        server.stop()


def _store(endpoint: str, cache: Path, url: str = URL) -> S3ModelStore:
    return S3ModelStore(url, cache, endpoint=endpoint)


def _push(registry: Registry) -> str:
    spec = yaml.safe_load((NANODET / "model.yaml").read_text())
    return registry.push(NANODET / "model.onnx", PushOptions(spec=spec, spec_source="nanodet-g-416/model.yaml"),
                         pushed_by="test").ref


@pytest.fixture
def pushed(s3, tmp_path, monkeypatch):
    """NanoDet pushed into the bucket through the registry (the path `aimass models push` takes), with
    the registry built from settings as the CLI builds it. (registry, endpoint, client)."""
    endpoint, client = s3
    monkeypatch.setenv("AIMASS_MODEL_STORE", URL)
    monkeypatch.setenv("AIMASS_MODEL_STORE_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AIMASS_MODEL_STORE_CACHE", str(tmp_path / "registry-cache"))
    registry = Registry(RegistrySettings(), routing=MemoryRouting(), builtin=None)
    assert isinstance(registry.store, S3ModelStore) and registry.store.root == URL
    assert _push(registry) == REF
    return registry, endpoint, client


def _keys(client) -> dict[str, int]:
    return {o["Key"]: o["Size"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])}


def test_a_push_lands_in_the_bucket_and_another_machine_lists_loads_and_detects(pushed, tmp_path):
    registry, endpoint, client = pushed
    sha = load_spec(NANODET).sha256
    keys = _keys(client)
    assert sorted(keys) == [f"site-a/models/blobs/sha256/{sha}.onnx", "site-a/models/versions/nanodet-g-416/1/meta.json",
                            "site-a/models/versions/nanodet-g-416/1/model.yaml"]
    assert keys[f"site-a/models/blobs/sha256/{sha}.onnx"] == (NANODET / "model.onnx").stat().st_size
    assert not (registry.store.cache.root / "tmp").exists()  # the push's staging folder is gone

    other = _store(endpoint, tmp_path / "other-machine")
    assert other.refs() == [REF]
    (rec,) = other.versions()
    assert (rec.ref, rec.sha256, rec.format, rec.retired) == (REF, sha, "nanodet", False)
    assert rec.size_bytes == (NANODET / "model.onnx").stat().st_size and rec.classes == 80
    assert other.meta(REF)["pushed_by"] == "test" and other.meta(REF)["probe"]["batch"] >= 1
    folder = other.folder(REF)
    assert folder == (tmp_path / "other-machine" / BUCKET / "site-a" / "models" / "versions" / "nanodet-g-416" /
                      "1").resolve()
    det = Detector.from_folder(folder, providers=["CPUExecutionProvider"])  # its own sha256 check included
    assert (det.name, det.version) == ("nanodet-g-416", "1")
    assert det.spec.onnx_path.resolve() == other.cache.blob_path(sha)
    result = det.detect([np.zeros((416, 416, 3), np.uint8)])
    assert len(result) == 1 and result[0] == []  # one frame in, one (empty: a blank frame) list of objects out
    # The detector's resolver takes the version from the store (the cache folder), not its model_dir.
    assert resolver(other, DetectorSettings().model_dir)(REF) == folder


def test_a_retire_is_seen_by_the_other_store(pushed, tmp_path):
    registry, endpoint, client = pushed
    other = _store(endpoint, tmp_path / "other-machine")
    assert other.get(REF).retired is False  # cached there before the retire
    asyncio.run(registry.retire(REF, "replaced by nanodet-g-416:2"))
    meta = json.loads(client.get_object(Bucket=BUCKET, Key="site-a/models/versions/nanodet-g-416/1/meta.json")
                      ["Body"].read())
    assert meta["retired"] is True and meta["retired_reason"] == "replaced by nanodet-g-416:2"
    rec = other.get(REF)
    assert rec.retired and rec.retired_reason == "replaced by nanodet-g-416:2"
    assert [r.retired for r in other.versions()] == [True]
    assert json.loads((other.folder(REF) / "meta.json").read_text())["retired"] is True


def test_pushing_the_same_version_again_is_refused_and_changes_nothing(pushed, tmp_path, monkeypatch):
    registry, endpoint, client = pushed
    before = {k: client.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in _keys(client)}
    with pytest.raises(PushRefused, match="nanodet-g-416:1 is already in the store") as exc:
        _push(registry)
    assert exc.value.reason == "exists"
    # Another registry that checked before the first one wrote model.yaml: the conditional write refuses it.
    late = _store(endpoint, tmp_path / "late-registry")
    monkeypatch.setattr(late, "_etags", lambda name, version: {})
    spec = {**yaml.safe_load((NANODET / "model.yaml").read_text()), "licence": "changed"}
    with pytest.raises(StoreError, match="already in the store") as exc:
        late.add(NANODET / "model.onnx", spec, {"pushed_by": "late"})
    assert exc.value.reason == "exists"
    spec_key = "site-a/models/versions/nanodet-g-416/1/model.yaml"
    assert client.head_object(Bucket=BUCKET, Key=spec_key)["ETag"] == before[spec_key]
    assert _store(endpoint, tmp_path / "reader").spec(REF)["licence"] != "changed"
    assert not (late.cache.root / "versions" / "nanodet-g-416" / "1").exists()


def test_a_blob_damaged_in_the_bucket_is_refused_on_download(pushed, tmp_path):
    registry, endpoint, client = pushed
    sha = load_spec(NANODET).sha256
    key = f"site-a/models/blobs/sha256/{sha}.onnx"
    data = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF  # one bit-flipped byte, same size
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
    other = _store(endpoint, tmp_path / "other-machine")
    assert other.get(REF).sha256 == sha  # the version's files are fine; its ONNX file is not
    with pytest.raises(StoreError, match=f"s3://{BUCKET}/{key} is damaged or was replaced") as exc:
        other.folder(REF)
    assert exc.value.reason == "corrupt" and isinstance(exc.value, OSError)  # a load failure for a detector
    assert not other.cache.blob_path(sha).exists() and list(other.cache.blobs.iterdir()) == []
    with pytest.raises(OSError):  # the detector's resolver refuses it too
        resolver(other, DetectorSettings().model_dir)(REF)


def test_a_missing_bucket_says_so_and_how_to_create_it(s3, tmp_path):
    endpoint, _ = s3
    store = _store(endpoint, tmp_path / "cache", url="s3://no-such-bucket/models")
    with pytest.raises(StoreError) as exc:
        store.versions()
    msg = str(exc.value)
    assert exc.value.reason == "unavailable"
    assert f"bucket 'no-such-bucket' does not exist at {endpoint}" in msg
    assert f"aws s3 mb s3://no-such-bucket --endpoint-url {endpoint}" in msg and "test-secret-key" not in msg
    registry = Registry(RegistrySettings(model_store=Path("s3://no-such-bucket/models")), store=store,
                        routing=MemoryRouting(), builtin=None)
    with pytest.raises(StoreError, match="does not exist"):  # a push is refused before anything is checked
        _push(registry)


def test_an_unreachable_endpoint_names_it(s3, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = _store(f"http://127.0.0.1:{port}", tmp_path / "cache")
    with pytest.raises(StoreError) as exc:
        store.has(REF)
    msg = str(exc.value)
    assert exc.value.reason == "unavailable" and isinstance(exc.value, OSError)
    assert f"endpoint http://127.0.0.1:{port} did not answer" in msg and "AIMASS_MODEL_STORE_S3_ENDPOINT" in msg
    assert "test-secret-key" not in msg and "test-access-key" not in msg


def test_the_folder_store_is_still_what_a_path_gives(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_MODEL_STORE", str(tmp_path / "store"))
    assert type(ModelStore.from_settings(RegistrySettings())) is ModelStore

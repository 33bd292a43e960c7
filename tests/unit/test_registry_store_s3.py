"""The S3 model store's own logic (aimass.model_store_s3) against an in-memory stand-in for the S3
client: URLs and keys, the order of a push's writes (model.yaml last, only if absent), listing page by
page, the cache following meta.json, a damaged blob refused, and what each failure says. The real
HTTP round trips are tests/integration/test_model_store_s3.py (moto's server)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from aimass.model_store import ModelStore, StoreError
from aimass.model_store_s3 import S3Location, S3ModelStore, S3StoreError, is_s3_url, make_client, parse_s3_url
from aimass.settings import DetectorSettings, RegistrySettings

botocore_exceptions = pytest.importorskip("botocore.exceptions")
ClientError = botocore_exceptions.ClientError
BUCKET = "models-bkt"
ENDPOINT = "http://s3.test:9000"


def _client_error(code: str, status: int, op: str = "GetObject", message: str = "") -> Exception:
    return ClientError({"Error": {"Code": code, "Message": message or code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class _Body:
    def __init__(self, data: bytes):
        self._data = data

    def read(self) -> bytes:
        return self._data

    def iter_chunks(self, size: int):
        for i in range(0, len(self._data), size):
            yield self._data[i:i + size]


class FakeS3:
    """The few S3 calls the store makes, on a dict, with ETags, conditional writes, a page size
    and a log of the calls (``ops``). ``fail``: op name -> an exception to raise once."""

    def __init__(self, page_size: int = 2, bucket: str = BUCKET):
        self.objects: dict[str, tuple[bytes, str, dict]] = {}
        self.page_size = page_size
        self.bucket = bucket
        self.ops: list[tuple] = []
        self.fail: dict[str, Exception] = {}
        self.meta = type("Meta", (), {"endpoint_url": ENDPOINT})()
        self._n = 0

    def _check(self, op: str, bucket: str) -> None:
        if op in self.fail:
            raise self.fail.pop(op)
        if bucket != self.bucket:
            raise _client_error("NoSuchBucket", 404, op)

    def put(self, key: str, data: bytes, metadata: dict | None = None) -> str:
        self._n += 1
        etag = f'"{hashlib.md5(data + str(self._n).encode()).hexdigest()}"'
        self.objects[key] = (data, etag, dict(metadata or {}))
        return etag

    def put_object(self, Bucket, Key, Body, IfNoneMatch=None, IfMatch=None, Metadata=None, ContentType=None):
        self.ops.append(("put", Key, {"IfNoneMatch": IfNoneMatch, "IfMatch": IfMatch}))
        self._check("put_object", Bucket)
        if IfNoneMatch == "*" and Key in self.objects:
            raise _client_error("PreconditionFailed", 412, "PutObject")
        if IfMatch is not None and (Key not in self.objects or self.objects[Key][1] != IfMatch):
            raise _client_error("PreconditionFailed", 412, "PutObject")
        data = Body.read() if hasattr(Body, "read") else bytes(Body)
        return {"ETag": self.put(Key, data, Metadata)}

    def get_object(self, Bucket, Key):
        self.ops.append(("get", Key))
        self._check("get_object", Bucket)
        if Key not in self.objects:
            raise _client_error("NoSuchKey", 404)
        data, etag, _ = self.objects[Key]
        return {"Body": _Body(data), "ETag": etag}

    def head_object(self, Bucket, Key):
        self.ops.append(("head", Key))
        self._check("head_object", Bucket)
        if Key not in self.objects:
            raise _client_error("404", 404, "HeadObject", "Not Found")
        data, etag, metadata = self.objects[Key]
        return {"ContentLength": len(data), "ETag": etag, "Metadata": metadata}

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        fake = self

        class Paginator:
            def paginate(self, Bucket, Prefix=""):
                fake.ops.append(("list", Prefix))
                fake._check("list_objects_v2", Bucket)
                keys = sorted(k for k in fake.objects if k.startswith(Prefix))
                for i in range(0, max(len(keys), 1), fake.page_size):
                    fake.ops.append(("page", Prefix, i // fake.page_size))
                    yield {"Contents": [{"Key": k, "ETag": fake.objects[k][1]} for k in keys[i:i + fake.page_size]]}
        return Paginator()

    def puts(self) -> list[str]:
        return [op[1] for op in self.ops if op[0] == "put"]


ONNX = b"not really onnx, but the store only hashes it" * 100
SHA = hashlib.sha256(ONNX).hexdigest()


def _spec(name: str = "det", version: str = "1") -> dict:
    return {"name": name, "version": version, "format": "nanodet", "input": {"width": 416, "height": 416},
            "classes": ["person", "car"], "licence": "MIT"}


@pytest.fixture
def fake() -> FakeS3:
    return FakeS3()


@pytest.fixture
def onnx(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(ONNX)
    return path


def _store(fake: FakeS3, cache: Path, url: str = f"s3://{BUCKET}/team/models") -> S3ModelStore:
    return S3ModelStore(url, cache, client=fake)


# ---------------------------------------------------------------- URLs and keys
@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://models-bkt", "models-bkt", ""),
    ("s3://models-bkt/", "models-bkt", ""),
    ("s3://models-bkt/team/models", "models-bkt", "team/models/"),
    ("s3://models-bkt//team//models/", "models-bkt", "team/models/"),
    ("S3://models-bkt/x", "models-bkt", "x/"),
    (Path("s3://models-bkt/team/models"), "models-bkt", "team/models/"),  # what a Path setting makes of it
    ("s3:/my.bucket-1/a", "my.bucket-1", "a/"),
])
def test_urls_parse_to_a_bucket_and_a_prefix(url, bucket, prefix):
    assert is_s3_url(url)
    loc = parse_s3_url(url)
    assert (loc.bucket, loc.prefix) == (bucket, prefix)
    assert parse_s3_url(loc.url) == loc  # the URL messages show parses back to the same place


@pytest.mark.parametrize("url, says", [
    ("s3://", "not an S3 bucket name"),
    ("s3://ab", "not an S3 bucket name"),
    ("s3://Models_Bkt/x", "not an S3 bucket name"),
    ("s3://models-bkt/a/../b", "'.' or '..'"),
    ("http://models-bkt/x", "not an S3 URL"),
    ("/var/lib/aimass/models", "not an S3 URL"),
])
def test_bad_urls_are_refused_saying_what_to_write(url, says):
    with pytest.raises(StoreError, match="s3://BUCKET") as exc:
        parse_s3_url(url)
    assert says in str(exc.value) and exc.value.reason == "bad_url"


def test_keys_follow_the_folder_stores_layout_under_the_prefix():
    loc = S3Location("bkt", "team/models/")
    assert loc.url == "s3://bkt/team/models" and S3Location("bkt").url == "s3://bkt"
    assert loc.blob_key(SHA) == f"team/models/blobs/sha256/{SHA}.onnx"
    assert loc.version_key("det", "1", "model.yaml") == "team/models/versions/det/1/model.yaml"
    assert loc.version_key("det", "1") == "team/models/versions/det/1/"
    assert S3Location("bkt").version_key("det", "2", "meta.json") == "versions/det/2/meta.json"
    assert loc.where(loc.blob_key(SHA)) == f"s3://bkt/team/models/blobs/sha256/{SHA}.onnx"
    with pytest.raises(StoreError, match="not allowed"):
        loc.version_key("../etc", "1")
    with pytest.raises(ValueError, match="not a sha256"):
        loc.blob_key("abc")


# ---------------------------------------------------------------- settings
def test_from_settings_picks_the_bucket_for_s3_urls_and_the_folder_otherwise(tmp_path, monkeypatch):
    pytest.importorskip("boto3")
    monkeypatch.setenv("AIMASS_MODEL_STORE", "s3://models-bkt/team/models")
    monkeypatch.setenv("AIMASS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AIMASS_MODEL_STORE_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AIMASS_MODEL_STORE_S3_REGION", "eu-west-3")
    store = ModelStore.from_settings(DetectorSettings())
    assert isinstance(store, S3ModelStore) and store.root == "s3://models-bkt/team/models"
    assert store.cache.root == (tmp_path / "state" / "model-cache" / "models-bkt" / "team" / "models").resolve()
    assert store.endpoint.startswith("http://127.0.0.1:9") and store.client.meta.region_name == "eu-west-3"
    monkeypatch.setenv("AIMASS_MODEL_STORE_CACHE", str(tmp_path / "cache"))
    assert ModelStore.from_settings(RegistrySettings()).cache.root == (tmp_path / "cache" / "models-bkt" / "team" / "models").resolve()
    monkeypatch.setenv("AIMASS_MODEL_STORE", str(tmp_path / "folder"))
    folder = ModelStore.from_settings(RegistrySettings())
    assert type(folder) is ModelStore and folder.root == (tmp_path / "folder").resolve()


def test_an_endpoint_that_is_not_a_url_is_refused(monkeypatch):
    with pytest.raises(StoreError, match="AIMASS_MODEL_STORE_S3_ENDPOINT 'minio:9000' is not an http"):
        make_client("minio:9000")


def test_boto3_is_imported_only_for_an_s3_store_and_its_absence_says_what_to_install(monkeypatch, tmp_path):
    code = ("import sys; from aimass.model_store import ModelStore; import aimass.model_store_s3; "
            "from aimass.settings import RegistrySettings; "
            f"ModelStore.from_settings(RegistrySettings(model_store={str(tmp_path / 's')!r})); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError, as when it is not installed
    monkeypatch.setenv("AIMASS_MODEL_STORE", "s3://models-bkt/m")
    with pytest.raises(S3StoreError, match=r"needs boto3.*pip install 'aimass\[s3\]'") as exc:
        ModelStore.from_settings(RegistrySettings())
    assert exc.value.reason == "unavailable" and "s3://models-bkt/m" in str(exc.value)


# ---------------------------------------------------------------- a push: what is written, in what order
def test_a_push_uploads_the_blob_then_meta_then_model_yaml_last_and_only_if_absent(fake, onnx, tmp_path):
    store = _store(fake, tmp_path / "cache")
    rec = store.add(onnx, _spec(), {"pushed_by": "test"})
    assert rec.ref == "det:1" and rec.sha256 == SHA and rec.size_bytes == len(ONNX)
    puts = [op for op in fake.ops if op[0] == "put"]
    assert [p[1] for p in puts] == [f"team/models/blobs/sha256/{SHA}.onnx", "team/models/versions/det/1/meta.json",
                                    "team/models/versions/det/1/model.yaml"]
    assert puts[2][2]["IfNoneMatch"] == "*" and puts[1][2]["IfNoneMatch"] is None
    assert fake.objects[f"team/models/blobs/sha256/{SHA}.onnx"][0] == ONNX
    assert fake.objects[f"team/models/blobs/sha256/{SHA}.onnx"][2] == {"sha256": SHA}
    uploaded = fake.objects["team/models/versions/det/1/model.yaml"][0].decode()
    assert f"file: ../../../blobs/sha256/{SHA}.onnx" in uploaded and f"sha256: {SHA}" in uploaded
    assert json.loads(fake.objects["team/models/versions/det/1/meta.json"][0])["pushed_by"] == "test"
    # The cache holds what it uploaded, with the ETags: reading it back downloads nothing.
    fake.ops.clear()
    assert store.folder("det:1") == store.cache.root / "versions" / "det" / "1"
    assert [op[0] for op in fake.ops if op[0] not in ("list", "page")] == []
    assert onnx.exists()  # copied, not moved


def test_a_second_version_of_the_same_file_does_not_upload_it_again(fake, onnx, tmp_path):
    store = _store(fake, tmp_path / "cache")
    store.add(onnx, _spec(version="1"), {})
    fake.ops.clear()
    store.add(onnx, _spec(version="2"), {})
    assert fake.puts() == ["team/models/versions/det/2/meta.json", "team/models/versions/det/2/model.yaml"]


def test_a_blob_key_that_does_not_hold_the_recorded_file_is_uploaded_again(fake, onnx, tmp_path):
    fake.put(f"team/models/blobs/sha256/{SHA}.onnx", b"x" * len(ONNX))  # same size, no recorded sha256
    _store(fake, tmp_path / "cache").add(onnx, _spec(), {})
    assert fake.objects[f"team/models/blobs/sha256/{SHA}.onnx"][0] == ONNX


def test_an_existing_version_is_never_overwritten(fake, onnx, tmp_path):
    store = _store(fake, tmp_path / "a")
    store.add(onnx, _spec(), {"pushed_by": "first"})
    before = dict(fake.objects)
    fake.ops.clear()
    other = _store(fake, tmp_path / "b")
    with pytest.raises(StoreError, match="det:1 is already in the store") as exc:
        other.add(onnx, _spec(), {"pushed_by": "second"})
    assert exc.value.reason == "exists" and fake.puts() == [] and fake.objects == before
    assert not (other.cache.root / "versions" / "det" / "1").exists()


def test_a_push_that_loses_the_race_for_model_yaml_is_refused_and_leaves_nothing_cached(fake, onnx, tmp_path,
                                                                                       monkeypatch):
    store = _store(fake, tmp_path / "cache")
    real_put = fake.put_object

    def another_registry_first(**kw):  # another registry writes model.yaml between our check and our write
        if kw["Key"].endswith("model.yaml"):
            fake.put(kw["Key"], b"name: det\nversion: '1'\n")
        return real_put(**kw)
    monkeypatch.setattr(fake, "put_object", another_registry_first)
    with pytest.raises(StoreError, match="already in the store") as exc:
        store.add(onnx, _spec(), {})
    assert exc.value.reason == "exists"
    assert fake.objects["team/models/versions/det/1/model.yaml"][0] == b"name: det\nversion: '1'\n"
    assert not (store.cache.root / "versions" / "det" / "1").exists()


def test_a_failed_upload_publishes_no_version_and_caches_none(fake, onnx, tmp_path):
    store = _store(fake, tmp_path / "cache")
    fake.fail["put_object"] = _client_error("AccessDenied", 403, "PutObject", "Access Denied")
    with pytest.raises(S3StoreError, match="denied writing s3://models-bkt/team/models/blobs") as exc:
        store.add(onnx, _spec(), {})
    assert exc.value.reason == "unavailable" and isinstance(exc.value, OSError)
    assert not any(k.endswith("model.yaml") for k in fake.objects) and not store.has("det:1")
    assert not (store.cache.root / "versions" / "det" / "1").exists() and store.versions() == []


def test_servers_without_conditional_writes_still_get_the_version_with_a_warning(fake, onnx, tmp_path, caplog,
                                                                                monkeypatch):
    real_put = fake.put_object

    def no_conditions(**kw):
        if kw.get("IfNoneMatch") or kw.get("IfMatch"):
            raise _client_error("NotImplemented", 501, "PutObject", "A header you provided implies functionality "
                                "that is not implemented")
        return real_put(**kw)
    monkeypatch.setattr(fake, "put_object", no_conditions)
    store = _store(fake, tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="aimass.model_store"):
        store.add(onnx, _spec(), {})
    assert store.has("det:1") and "does not do conditional writes" in caplog.text
    with pytest.raises(StoreError, match="already in the store"):  # the check before the upload still holds
        store.add(onnx, _spec(), {})


# ---------------------------------------------------------------- reading
def test_listing_goes_page_by_page_and_only_model_yaml_makes_a_version(fake, onnx, tmp_path):
    store = _store(fake, tmp_path / "cache")
    for v in ("10", "2", "1"):
        store.add(onnx, _spec(version=v), {})
    fake.put("team/models/versions/det/11/meta.json", b"{}")  # a push that stopped before model.yaml
    fake.put("team/models/versions/det/x/y/model.yaml", b"")  # not the layout
    fake.put("elsewhere/versions/zz/1/model.yaml", b"")  # outside the prefix
    fake.ops.clear()
    assert [r.ref for r in store.versions()] == ["det:1", "det:2", "det:10"]
    assert max(op[2] for op in fake.ops if op[0] == "page") >= 3  # 8 keys, 2 a page
    assert store.refs() == ["det:1", "det:2", "det:10"]
    assert store.next_version("det") == "11" and store.next_version("new") == "1"
    assert store.has("det:2") and not store.has("det:11") and not store.has("zz:1") and not store.has("bad")


def test_another_machine_downloads_a_version_once_and_follows_meta_json(fake, onnx, tmp_path):
    _store(fake, tmp_path / "a").add(onnx, _spec(), {})
    reader = _store(fake, tmp_path / "b")
    folder = reader.folder("det:1")
    assert folder == reader.cache.root / "versions" / "det" / "1"
    assert (reader.cache.root / "blobs" / "sha256" / f"{SHA}.onnx").read_bytes() == ONNX
    fake.ops.clear()
    assert reader.folder("det:1") == folder and [op for op in fake.ops if op[0] == "get"] == []
    meta_key = "team/models/versions/det/1/meta.json"
    meta = json.loads(fake.objects[meta_key][0])
    fake.put(meta_key, json.dumps({**meta, "retired": True, "retired_reason": "old"}).encode())
    fake.ops.clear()
    rec = reader.get("det:1")
    assert rec.retired and rec.retired_reason == "old"
    assert [op[1] for op in fake.ops if op[0] == "get"] == [meta_key]  # meta.json only, not model.yaml nor the blob


def test_retire_replaces_meta_json_if_unchanged_and_reads_it_again_when_it_changed(fake, onnx, tmp_path,
                                                                                  monkeypatch):
    store = _store(fake, tmp_path / "cache")
    store.add(onnx, _spec(), {"pushed_by": "me"})
    meta_key = "team/models/versions/det/1/meta.json"
    real_put = fake.put_object
    raced = []

    def someone_edits_meta_first(**kw):
        if kw["Key"] == meta_key and not raced:
            raced.append(1)
            meta = json.loads(fake.objects[meta_key][0])
            fake.put(meta_key, json.dumps({**meta, "note": "edited meanwhile"}).encode())
        return real_put(**kw)
    monkeypatch.setattr(fake, "put_object", someone_edits_meta_first)
    rec = store.retire("det:1", "replaced")
    assert rec.retired and rec.retired_reason == "replaced"
    in_bucket = json.loads(fake.objects[meta_key][0])
    assert in_bucket["retired"] is True and in_bucket["note"] == "edited meanwhile" and in_bucket["pushed_by"] == "me"
    meta_puts = [op for op in fake.ops if op[0] == "put" and op[1] == meta_key]
    assert len(meta_puts) == 3 and all(op[2]["IfMatch"] for op in meta_puts[1:])  # the push's, the lost one, the retry
    assert store.meta("det:1") == in_bucket
    assert fake.puts().count("team/models/versions/det/1/model.yaml") == 1  # model.yaml is never rewritten


def test_a_damaged_blob_is_refused_before_it_reaches_the_cache(fake, onnx, tmp_path):
    _store(fake, tmp_path / "a").add(onnx, _spec(), {})
    key = f"team/models/blobs/sha256/{SHA}.onnx"
    fake.put(key, ONNX[:-1] + b"!")
    reader = _store(fake, tmp_path / "b")
    with pytest.raises(StoreError, match=f"s3://models-bkt/{key} is damaged or was replaced") as exc:
        reader.folder("det:1")
    assert exc.value.reason == "corrupt" and isinstance(exc.value, OSError)
    blobs = reader.cache.root / "blobs" / "sha256"
    assert list(blobs.iterdir()) == []  # neither the file nor a temporary one
    del fake.objects[key]
    with pytest.raises(StoreError, match="which the bucket at http://s3.test:9000 does not hold") as exc:
        reader.folder("det:1")
    assert exc.value.reason == "corrupt"


def test_an_unknown_version_names_the_store_and_what_it_holds(fake, onnx, tmp_path):
    store = _store(fake, tmp_path / "cache")
    store.add(onnx, _spec(), {})
    with pytest.raises(StoreError, match=r"nope:1 is not in the model store s3://models-bkt/team/models "
                                         r"\(at http://s3.test:9000\); it holds det:1") as exc:
        store.folder("nope:1")
    assert exc.value.reason == "unknown"


def test_a_cached_version_the_bucket_no_longer_holds_is_dropped(fake, onnx, tmp_path):
    store = _store(fake, tmp_path / "cache")
    store.add(onnx, _spec(), {})
    fake.objects.clear()  # an emptied (or another) bucket
    assert store.versions() == [] and not store.has("det:1")
    with pytest.raises(StoreError, match="not in the model store"):
        store.get("det:1")
    assert not (store.cache.root / "versions" / "det" / "1").exists()
    store.add(onnx, _spec(), {})  # and it can be pushed there again
    assert store.has("det:1")


# ---------------------------------------------------------------- what failures say
def _explained(exc: Exception) -> S3StoreError:
    store = S3ModelStore(f"s3://{BUCKET}/team/models", "/nonexistent-cache", client=FakeS3())
    err = store._error(exc, "reading", "team/models/versions/det/1/model.yaml")
    assert isinstance(err, StoreError) and isinstance(err, OSError) and err.reason == "unavailable"
    return err


def test_no_such_bucket_says_which_and_how_to_create_it():
    msg = str(_explained(_client_error("NoSuchBucket", 404, "ListObjectsV2", "The specified bucket does not exist")))
    assert f"bucket '{BUCKET}' does not exist at {ENDPOINT}" in msg
    assert f"aws s3 mb s3://{BUCKET} --endpoint-url {ENDPOINT}" in msg and f"mc mb ALIAS/{BUCKET}" in msg
    assert "AIMASS_MODEL_STORE=s3://models-bkt/team/models" in msg


@pytest.mark.parametrize("code", ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_access_denied_names_the_key_and_the_credentials_variables(code):
    msg = str(_explained(_client_error(code, 403, "GetObject", "nope")))
    assert f"denied reading s3://{BUCKET}/team/models/versions/det/1/model.yaml ({code}: nope)" in msg
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        assert var in msg
    assert "s3:GetObject" in msg


def test_missing_credentials_and_an_unreachable_endpoint_say_what_to_check():
    msg = str(_explained(botocore_exceptions.NoCredentialsError()))
    assert "no S3 credentials" in msg and "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in msg
    msg = str(_explained(botocore_exceptions.EndpointConnectionError(endpoint_url=ENDPOINT + "/models-bkt")))
    assert f"S3 endpoint {ENDPOINT} did not answer while reading s3://{BUCKET}/team/models/versions" in msg
    assert "AIMASS_MODEL_STORE_S3_ENDPOINT" in msg
    msg = str(_explained(_client_error("PermanentRedirect", 301, "GetObject", "use the bucket's region")))
    assert "is in another region; set AIMASS_MODEL_STORE_S3_REGION" in msg
    msg = str(_explained(_client_error("InternalError", 500, "GetObject", "We encountered an internal error")))
    assert f"S3 at {ENDPOINT} refused reading s3://{BUCKET}/team/models/versions/det/1/model.yaml: InternalError" in msg


def test_a_failing_bucket_is_an_error_not_an_empty_store(fake, tmp_path):
    store = _store(fake, tmp_path / "cache", url="s3://no-such-bkt/m")
    for call in (store.versions, store.refs, lambda: store.has("det:1"), lambda: store.next_version("det")):
        with pytest.raises(S3StoreError, match="bucket 'no-such-bkt' does not exist"):
            call()


def test_the_registry_reports_an_unusable_bucket_as_unavailable():
    from aimass_registry import api
    assert api._status_of(S3StoreError("unavailable", "x")) == 503
    assert api._status_of(S3StoreError("corrupt", "x")) == 500 and api._status_of(StoreError("exists", "x")) == 409

"""The model store in an S3-compatible bucket: ``AIMASS_MODEL_STORE=s3://BUCKET[/PREFIX]``.

The bucket is the source of truth. Its keys under ``PREFIX/`` are the folder store's layout
(aimass.model_store)::

    blobs/sha256/<hex>.onnx                        the ONNX file, named by its sha256
    versions/<name>/<version>/model.yaml           file: ../../../blobs/sha256/<hex>.onnx, sha256: <hex>
    versions/<name>/<version>/meta.json            created, size, licence, probe facts, retired flag

A version exists when its model.yaml key does. A push builds the version in the local cache with the
folder store's own ``add``, then uploads the blob (unless the bucket holds it already), meta.json, and
model.yaml last, with ``If-None-Match: *`` so that a version is never overwritten, not even by a
second registry pushing the same NAME:VERSION at the same moment. ``retire`` replaces meta.json
(``If-Match`` its ETag). Listings use list_objects_v2, page by page.

Reads go through a local cache (``model_store_cache``, default STATE_DIR/model-cache), a folder store
at ``<cache>/<bucket>/<prefix>`` holding the versions read so far: ``folder(ref)`` returns its folder
for that version, which ``Detector.from_folder`` loads as any model folder (its sha256 check
included). Each read lists the version's keys once (one request) and downloads model.yaml and
meta.json when they are missing or their ETag changed (a retire); ``folder`` also downloads the blob
when it is missing and refuses one whose sha256 is not the one model.yaml names (StoreError
``corrupt``), before it reaches the cache.

Credentials come from boto3's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE and
~/.aws, the machine's role), never from our settings, and are never logged. boto3 is imported only
when an S3 store is built (``pip install 'aimass[s3]'``). See docs/model-store.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aimass.model_store import (META_FILE, NAME_RE, SPEC_FILE, ModelStore, StoreError, VersionRecord, _HEX64,
                                _version_key, _write_atomic, check_name, parse_ref)

log = logging.getLogger("aimass.model_store")

ETAGS_FILE = ".etags.json"  # in a cached version folder: the bucket's ETags of the model.yaml and meta.json it holds
CHUNK = 1024 * 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_URL_RE = re.compile(r"^s3:/+(.*)$", re.IGNORECASE)  # "s3://b/p", or "s3:/b/p" as the Path setting spells it
CREDENTIALS_HELP = ("boto3 reads them from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for "
                    "temporary ones), else the profile AWS_PROFILE names in ~/.aws/credentials, else the machine's "
                    "role")
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
_ACCESS_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "TokenRefreshRequired", "AccountProblem", "InvalidSecurity"}


class S3StoreError(StoreError, OSError):
    """What the S3 store raises. ``reason`` as StoreError's, plus ``unavailable``: the bucket cannot be
    used (endpoint not answering, no such bucket, access denied, boto3 missing). Also an OSError, as
    a folder store's failures are, so a detector treats it as a model that failed to load."""


class _PreconditionFailed(Exception):
    """A conditional write lost: the key exists (If-None-Match) or changed (If-Match)."""


class _NoConditionalWrites(Exception):
    """The server does not do If-None-Match / If-Match on PUT (501 NotImplemented)."""


def is_s3_url(value: Any) -> bool:
    return bool(_URL_RE.match(str(value).strip()))


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` and the keys of the store's layout under it."""

    bucket: str
    prefix: str = ""  # "" or "a/b/" (ends with "/")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def blob_key(self, sha256: str) -> str:
        if not _HEX64.match(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 in hex")
        return self.key("blobs", "sha256", f"{sha256}.onnx")

    def version_key(self, name: str, version: str, file: str = "") -> str:
        return self.key("versions", check_name("name", name), check_name("version", version), file)

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def parse_s3_url(value: Any) -> S3Location:
    """``s3://BUCKET[/PREFIX]`` -> S3Location; StoreError ``bad_url`` saying what is wrong."""
    text = str(value).strip()
    m = _URL_RE.match(text)
    if not m:
        raise StoreError("bad_url", f"{text!r} is not an S3 URL; write s3://BUCKET or s3://BUCKET/PREFIX")
    bucket, _, prefix = m.group(1).partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise StoreError("bad_url", f"{text!r}: {bucket!r} is not an S3 bucket name (3 to 63 lower-case letters, "
                         "digits, '.' and '-', starting and ending with a letter or digit); write s3://BUCKET[/PREFIX]")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise StoreError("bad_url", f"{text!r}: the prefix may not hold '.' or '..' parts; write s3://BUCKET[/PREFIX]")
    return S3Location(bucket, "".join(p + "/" for p in parts))


def make_client(endpoint: str = "", region: str = "", url: str = "the S3 model store"):
    """A boto3 S3 client (credentials from boto3's chain); S3StoreError when boto3 is not installed."""
    if endpoint and not re.match(r"^https?://[^/\s]+", endpoint):
        raise StoreError("bad_url", f"AIMASS_MODEL_STORE_S3_ENDPOINT {endpoint!r} is not an http:// or https:// URL "
                         "(e.g. http://minio:9000); leave it empty for AWS S3")
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise S3StoreError("unavailable", f"AIMASS_MODEL_STORE={url} is an S3 bucket, which needs boto3, and boto3 "
                           "is not installed here: pip install 'aimass[s3]'") from None
    config = Config(connect_timeout=10, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"},
                    s3={"addressing_style": "path"} if endpoint else None)
    return boto3.session.Session().client("s3", endpoint_url=endpoint or None, region_name=region or None,
                                          config=config)


def _error_code(exc: BaseException) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a botocore ClientError; ("", "", 0) for anything else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", "", 0
    err = response.get("Error") or {}
    return (str(err.get("Code") or ""), str(err.get("Message") or ""),
            int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0))


def _read_etags(folder: Path) -> dict[str, str | None]:
    try:
        data = json.loads((folder / ETAGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_etags(folder: Path, etags: dict[str, str | None]) -> None:
    _write_atomic(folder / ETAGS_FILE, json.dumps(etags, sort_keys=True).encode())


def _forget(folder: Path) -> None:
    """Drop a cached version folder (the bucket does not hold that version, or holds another one)."""
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


class S3ModelStore:
    """The model store in an S3-compatible bucket, with ModelStore's public methods. ``root`` is the
    store's URL (what messages name); ``cache`` is the folder store that mirrors it locally."""

    def __init__(self, url: str | Path, cache: str | Path, *, endpoint: str = "", region: str = "", client=None):
        self.location = parse_s3_url(url)
        self.root = self.location.url
        self.cache = ModelStore(Path(cache).expanduser() / self.location.bucket / self.location.prefix)
        self.client = client if client is not None else make_client(endpoint, region, self.root)
        meta = getattr(self.client, "meta", None)
        self.endpoint = str(getattr(meta, "endpoint_url", "") or endpoint or "AWS S3")
        self._conditional_writes = True

    @classmethod
    def from_settings(cls, settings) -> "S3ModelStore":
        cache = settings.model_store_cache or Path(settings.state_dir) / "model-cache"
        return cls(settings.model_store, cache, endpoint=settings.model_store_s3_endpoint,
                   region=settings.model_store_s3_region)

    def __repr__(self) -> str:
        return f"S3ModelStore({self.root!r}, endpoint={self.endpoint!r}, cache={str(self.cache.root)!r})"

    # -- the bucket ------------------------------------------------------------------------------
    def _error(self, exc: BaseException, doing: str, key: str) -> S3StoreError:
        """The one-line explanation of a failed S3 call: what, where, and what to do."""
        from botocore import exceptions as bx

        where, at = self.location.where(key), self.endpoint
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return S3StoreError("unavailable", f"no S3 credentials for {doing} {where} at {at}: {CREDENTIALS_HELP}; "
                                "set them for this process")
        if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
            return S3StoreError("unavailable", f"the model store's S3 endpoint {at} did not answer while {doing} "
                                f"{where} ({exc}). Is it up, and is AIMASS_MODEL_STORE_S3_ENDPOINT right (empty: AWS)?")
        code, message, status = _error_code(exc)
        bucket = self.location.bucket
        if code == "NoSuchBucket":
            return S3StoreError("unavailable", f"the model store's bucket {bucket!r} does not exist at {at} "
                                f"(AIMASS_MODEL_STORE={self.root}). Create it, e.g. `aws s3 mb s3://{bucket} "
                                f"--endpoint-url {at}` (`mc mb ALIAS/{bucket}` on MinIO), or fix AIMASS_MODEL_STORE")
        if code in _ACCESS_CODES or status == 403:
            return S3StoreError("unavailable", f"S3 at {at} denied {doing} {where} ({code or status}: {message}). "
                                f"Check the credentials: {CREDENTIALS_HELP}; they need s3:ListBucket, s3:GetObject "
                                f"and s3:PutObject on the bucket {bucket!r}")
        if code in _REGION_CODES or status == 301:
            return S3StoreError("unavailable", f"S3 at {at} refused {doing} {where} ({code or status}: {message}): the "
                                f"bucket {bucket!r} is in another region; set AIMASS_MODEL_STORE_S3_REGION to it")
        if code or status:
            return S3StoreError("unavailable", f"S3 at {at} refused {doing} {where}: {code or status} {message}".rstrip())
        return S3StoreError("unavailable", f"{doing} {where} at {at} failed: {exc}")

    def _call(self, doing: str, key: str, method: str, *, missing_ok: bool = False, **kw):
        """``client.<method>(Bucket=..., **kw)``; None for a missing key when ``missing_ok``;
        _PreconditionFailed for a conditional write that lost; S3StoreError for the rest."""
        try:
            return getattr(self.client, method)(Bucket=self.location.bucket, **kw)
        except Exception as exc:
            code, _, status = _error_code(exc)
            if missing_ok and (code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket")):
                return None
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                raise _PreconditionFailed(key) from None
            if ("IfNoneMatch" in kw or "IfMatch" in kw) and (code == "NotImplemented" or status == 501):
                raise _NoConditionalWrites(key) from None
            if not _is_client_error(exc):
                raise
            raise self._error(exc, doing, key) from None

    def _keys(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` (relative to it) -> its ETag, page by page."""
        out: dict[str, str] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket,
                                                                               Prefix=prefix):
                for obj in page.get("Contents") or ():
                    out[obj["Key"][len(prefix):]] = obj.get("ETag", "")
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            raise self._error(exc, "listing", prefix + "*") from None
        return out

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """(content, ETag) of ``key``; None when the bucket has no such key."""
        obj = self._call("reading", key, "get_object", missing_ok=True, Key=key)
        if obj is None:
            return None
        try:
            return obj["Body"].read(), obj.get("ETag", "")
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            raise self._error(exc, "reading", key) from None

    def _put(self, key: str, body, *, if_none_match: bool = False, if_match: str | None = None, **kw) -> str:
        """Write ``key``; its new ETag. ``if_none_match``: only if it does not exist; ``if_match``:
        only if its ETag is that one (_PreconditionFailed otherwise). Where the server does not do
        conditional writes (501), the write is made without the condition and a warning logged."""
        cond = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": if_match} if if_match else {}
        try:
            return self._call("writing", key, "put_object", Key=key, Body=body,
                              **(cond if self._conditional_writes else {}), **kw).get("ETag", "")
        except _NoConditionalWrites:
            pass
        log.warning("the S3 endpoint %s does not do conditional writes (If-None-Match/If-Match): two registries "
                    "pushing the same version at once could overwrite each other (docs/model-store.md)", self.endpoint)
        self._conditional_writes = False
        if hasattr(body, "seek"):
            body.seek(0)
        return self._call("writing", key, "put_object", Key=key, Body=body, **kw).get("ETag", "")

    def _listing(self) -> dict[tuple[str, str], dict[str, str]]:
        """(name, version) -> {file: ETag} for every versions/<name>/<version>/<file> key."""
        out: dict[tuple[str, str], dict[str, str]] = {}
        for rel, etag in self._keys(self.location.key("versions", "")).items():
            parts = rel.split("/")
            if len(parts) == 3 and all(NAME_RE.match(p) for p in parts[:2]):
                out.setdefault((parts[0], parts[1]), {})[parts[2]] = etag
        return out

    def _etags(self, name: str, version: str) -> dict[str, str]:
        return self._keys(self.location.version_key(name, version))

    # -- the cache -------------------------------------------------------------------------------
    def _sync(self, name: str, version: str, etags: dict[str, str] | None = None, *, blob: bool = False) -> Path:
        """Bring the cached copy of name:version in step with the bucket (``etags``: its keys' ETags,
        when a listing already has them); its cache folder. S3StoreError ``unknown`` when the bucket
        does not hold the version."""
        etags = self._etags(name, version) if etags is None else etags
        folder = self.cache._version_dir(name, version)
        if SPEC_FILE not in etags:
            _forget(folder)
            raise self._unknown(f"{name}:{version}")
        cached = _read_etags(folder)
        if cached.get(SPEC_FILE) != etags[SPEC_FILE] or not (folder / SPEC_FILE).is_file():
            self._download_version(name, version, folder)
        elif cached.get(META_FILE) != etags.get(META_FILE):
            self._download_meta(name, version, folder, cached)
        if blob:
            self._ensure_blob(f"{name}:{version}")
        return folder

    def _download_version(self, name: str, version: str, folder: Path) -> None:
        """model.yaml and meta.json into a new cache folder, which appears in one rename."""
        spec = self._get(self.location.version_key(name, version, SPEC_FILE))
        if spec is None:
            raise self._unknown(f"{name}:{version}")
        meta = self._get(self.location.version_key(name, version, META_FILE))
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            _write_atomic(tmp / SPEC_FILE, spec[0], mode=0o444)
            if meta is not None:
                _write_atomic(tmp / META_FILE, meta[0])
            _write_etags(tmp, {SPEC_FILE: spec[1], META_FILE: meta[1] if meta else None})
            _forget(folder)  # a copy of what the bucket held before under this name (an emptied bucket)
            try:
                os.rename(tmp, folder)
            except OSError:
                if not (folder / SPEC_FILE).is_file():
                    raise  # else another process sharing the cache put the same version there meanwhile
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("model store: cached %s:%s from %s", name, version, self.root)

    def _download_meta(self, name: str, version: str, folder: Path, cached: dict[str, str | None]) -> None:
        meta = self._get(self.location.version_key(name, version, META_FILE))
        if meta is None:
            (folder / META_FILE).unlink(missing_ok=True)
        else:
            _write_atomic(folder / META_FILE, meta[0])
        _write_etags(folder, {**cached, META_FILE: meta[1] if meta else None})

    def _ensure_blob(self, model_ref: str) -> Path:
        """The cached blob of a cached version, downloaded and checked against its sha256 if missing."""
        sha = str(self.cache.spec(model_ref).get("sha256") or "")
        if not _HEX64.match(sha):
            spec_key = self.location.version_key(*parse_ref(model_ref), SPEC_FILE)
            raise S3StoreError("corrupt", f"{self.location.where(spec_key)} has no valid sha256; push the model again "
                               "as a new version")
        path = self.cache.blob_path(sha)
        if path.is_file():
            return path
        key = self.location.blob_key(sha)
        obj = self._call("reading", key, "get_object", missing_ok=True, Key=key)
        if obj is None:
            raise S3StoreError("corrupt", f"{model_ref}'s model.yaml names the ONNX file {self.location.where(key)}, "
                               f"which the bucket at {self.endpoint} does not hold; push the model again (a new "
                               "version) to upload it")
        self.cache.blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache.blobs, prefix=f".{sha[:16]}.", suffix=".tmp")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as f:
                try:
                    for chunk in obj["Body"].iter_chunks(CHUNK):
                        digest.update(chunk)
                        f.write(chunk)
                except Exception as exc:
                    if not _is_client_error(exc):
                        raise
                    raise self._error(exc, "reading", key) from None
                f.flush()
                os.fsync(f.fileno())
            if digest.hexdigest() != sha:
                raise S3StoreError("corrupt", f"{self.location.where(key)} is damaged or was replaced: its sha256 is "
                                   f"{digest.hexdigest()}, not {sha} as {model_ref}'s model.yaml says, so it was "
                                   f"refused (nothing cached). {model_ref} cannot be served until that key holds the "
                                   f"right file again: copy it there (aws s3 cp FILE.onnx {self.location.where(key)})")
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("model store: cached blob %s from %s", sha[:12], self.root)
        return path

    def _unknown(self, model_ref: str) -> S3StoreError:
        known = self.refs()
        return S3StoreError("unknown", f"model {model_ref} is not in the model store {self.root} (at {self.endpoint}); "
                            f"it holds {', '.join(known) if known else 'no models'}. Push it with `aimass models push`, "
                            "or check AIMASS_MODEL_STORE")

    # -- reading ---------------------------------------------------------------------------------
    def refs(self) -> list[str]:
        listing = self._listing()
        return [f"{n}:{v}" for n, v in sorted((nv for nv, files in listing.items() if SPEC_FILE in files),
                                              key=lambda nv: (nv[0], _version_key(nv[1])))]

    def has(self, model_ref: str) -> bool:
        """Whether the bucket holds ``model_ref`` (its model.yaml key exists; retired ones included)."""
        try:
            name, version = parse_ref(model_ref)
        except StoreError:
            return False
        return SPEC_FILE in self._etags(name, version)

    def folder(self, model_ref: str) -> Path:
        """The version's folder in the local cache, blob included: ``Detector.from_folder`` loads it."""
        return self._sync(*parse_ref(model_ref), blob=True)

    def spec(self, model_ref: str) -> dict[str, Any]:
        self._sync(*parse_ref(model_ref))
        return self.cache.spec(model_ref)

    def meta(self, model_ref: str) -> dict[str, Any]:
        self._sync(*parse_ref(model_ref))
        return self.cache.meta(model_ref)

    def get(self, model_ref: str) -> VersionRecord:
        self._sync(*parse_ref(model_ref))
        return self.cache.get(model_ref)

    def versions(self) -> list[VersionRecord]:
        """Every version the bucket holds (one listing; meta.json downloaded where it changed), by
        name then version. A version that cannot be read is skipped, as in the folder store."""
        listing = self._listing()
        out = []
        for name, version in sorted(listing, key=lambda nv: (nv[0], _version_key(nv[1]))):
            etags = listing[(name, version)]
            if SPEC_FILE not in etags:
                continue  # a push in progress (or one that stopped before model.yaml): not a version
            try:
                self._sync(name, version, etags)
                out.append(self.cache.get(f"{name}:{version}"))
            except S3StoreError as exc:
                if exc.reason == "unavailable":
                    raise
            except (StoreError, TypeError, ValueError):
                continue
        return out

    def next_version(self, name: str) -> str:
        keys = self._keys(self.location.key("versions", check_name("name", name), ""))
        numbers = [int(v) for v, _, file in (k.partition("/") for k in keys) if v.isdigit() and file == SPEC_FILE]
        return str(max(numbers, default=0) + 1)

    # -- writing ---------------------------------------------------------------------------------
    def staging(self) -> Path:
        return self.cache.staging()

    def discard(self, staging: Path) -> None:
        self.cache.discard(staging)

    def add(self, onnx_file: Path, spec: dict[str, Any], meta: dict[str, Any], *, move: bool = False) -> VersionRecord:
        """Store a validated version: built in the cache by the folder store's ``add``, then uploaded:
        the blob (unless the bucket holds it), meta.json, and model.yaml last, only if absent.
        StoreError ``exists`` when the bucket holds the version: versions are never overwritten."""
        name, version = check_name("name", spec.get("name", "")), check_name("version", spec.get("version", ""))
        if SPEC_FILE in self._etags(name, version):
            raise ModelStore._exists(name, version)
        folder = self.cache._version_dir(name, version)
        _forget(folder)  # a cached copy of a version the bucket does not hold (an emptied or other bucket)
        record = self.cache.add(onnx_file, spec, meta, move=move)
        try:
            self._put_blob(record.sha256, record.size_bytes)
            meta_etag = self._put(self.location.version_key(name, version, META_FILE),
                                  (folder / META_FILE).read_bytes(), ContentType="application/json")
            try:
                spec_etag = self._put(self.location.version_key(name, version, SPEC_FILE),
                                      (folder / SPEC_FILE).read_bytes(), if_none_match=True,
                                      ContentType="application/yaml")
            except _PreconditionFailed:
                raise ModelStore._exists(name, version) from None
        except BaseException:
            _forget(folder)  # not in the bucket, so not a version: the cache does not keep it either
            raise
        _write_etags(folder, {SPEC_FILE: spec_etag, META_FILE: meta_etag})
        log.info("model store: uploaded %s to %s", record.ref, self.root)
        return record

    def _put_blob(self, sha: str, size: int) -> None:
        """Upload the cached blob unless the bucket holds it already (same size and recorded sha256)."""
        key = self.location.blob_key(sha)
        head = self._call("checking", key, "head_object", missing_ok=True, Key=key)
        if head and head.get("ContentLength") == size and (head.get("Metadata") or {}).get("sha256") == sha:
            return  # another version of the same file uploaded it
        with open(self.cache.blob_path(sha), "rb") as f:
            self._put(key, f, Metadata={"sha256": sha}, ContentType="application/octet-stream")

    def retire(self, model_ref: str, reason: str = "") -> VersionRecord:
        """Mark a version retired: its meta.json replaced in the bucket (only if it did not change
        since it was read; read again and retried when it did)."""
        name, version = parse_ref(model_ref)
        key = self.location.version_key(name, version, META_FILE)
        for _ in range(5):
            folder = self._sync(name, version)
            if self.cache.meta(model_ref).get("retired"):
                break
            etags = _read_etags(folder)
            self.cache.retire(model_ref, reason)  # the folder store's own change, to the cached meta.json
            try:
                etag = self._put(key, (folder / META_FILE).read_bytes(), if_match=etags.get(META_FILE),
                                 ContentType="application/json")
            except _PreconditionFailed:
                _write_etags(folder, {**etags, META_FILE: None})  # the cached meta.json is not the bucket's
                continue  # someone else changed meta.json meanwhile: read it again
            except BaseException:
                _write_etags(folder, {**etags, META_FILE: None})
                raise
            _write_etags(folder, {**etags, META_FILE: etag})
            break
        else:
            raise S3StoreError("unavailable", f"{self.location.where(key)} kept changing while {model_ref} was being "
                               "retired; try again")
        return self.get(model_ref)


def _is_client_error(exc: BaseException) -> bool:
    """An error of botocore's (the service's answer or the client's own): turned into S3StoreError."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return False
    return isinstance(exc, (BotoCoreError, ClientError))

"""The model store: ONNX files by content hash and one folder per model version.

Layout under the root (``AIMASS_MODEL_STORE``, a folder every detector and the registry share)::

    blobs/sha256/<hex>.onnx            the ONNX file, named by its sha256; written once, read-only
    versions/<name>/<version>/
        model.yaml                     as the detector reads it (aimass_detector.model.load_spec), with
                                       ``file: ../../../blobs/sha256/<hex>.onnx`` and that ``sha256``
        meta.json                      created, size, licence, who pushed it from which file, the
                                       probe's facts, and the retired flag (with when and why)
    tmp/                               pushes in progress (removed when they end, kept or refused)

So ``Detector.from_folder(store.folder("pedssd:1"))`` loads a stored version as it loads any model
folder, sha256 check included. A version folder appears in one rename, complete or not at all, and
is never rewritten: a new model is a new version. Only meta.json changes (retire), by replacing it.
Two versions with the same file share one blob. ``AIMASS_MODEL_STORE=s3://BUCKET[/PREFIX]`` puts the
same layout in an S3-compatible bucket instead (aimass.model_store_s3, docs/model-store.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from aimass.contracts import now_ms

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME_LEN = 64
SPEC_FILE = "model.yaml"
META_FILE = "meta.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class StoreError(ValueError):
    """A store operation that cannot be done; the message says why and what to do. ``reason``:
    ``bad_name``, ``unknown`` (no such version), ``exists`` (the version is already stored),
    ``corrupt`` (a stored version that cannot be read), and for a store in S3 ``unavailable`` (the
    bucket cannot be used) and ``bad_url``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a valid model name or version, else StoreError saying what is allowed."""
    value = str(value)
    if not NAME_RE.match(value) or len(value) > MAX_NAME_LEN:
        raise StoreError("bad_name", f"model {kind} {value!r} is not allowed: use 1..{MAX_NAME_LEN} letters, digits, "
                         "'_', '.' or '-', starting with a letter or digit (no ':' or '/': a model reference is "
                         "NAME:VERSION)")
    return value


def parse_ref(model_ref: str) -> tuple[str, str]:
    """"name:version" -> (name, version); StoreError when either part is not a valid name."""
    name, sep, version = str(model_ref).rpartition(":")
    if not sep:
        raise StoreError("bad_name", f"{model_ref!r} is not a model reference; write NAME:VERSION, e.g. pedssd:1")
    return check_name("name", name), check_name("version", version)


def _version_key(version: str) -> tuple:
    """Natural order: "2" before "10", numbers before words."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p)


@dataclass(frozen=True)
class VersionRecord:
    """One stored version, as `aimass models list` shows it."""

    name: str
    version: str
    format: str
    input_width: int
    input_height: int
    classes: int
    sha256: str
    size_bytes: int
    licence: str
    created_ms: float
    retired: bool
    retired_reason: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def created(self) -> str:
        return dt.datetime.fromtimestamp(self.created_ms / 1000.0, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self), "created": self.created}


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and one rename, so
    a reader sees the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ModelStore:
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()

    @classmethod
    def from_settings(cls, settings) -> "ModelStore":
        """The store ``model_store`` names: this folder store, or for ``s3://BUCKET[/PREFIX]`` the
        bucket (aimass.model_store_s3.S3ModelStore, which imports boto3)."""
        if str(settings.model_store).lower().startswith("s3:/"):  # a Path setting spells s3:// as s3:/
            from aimass.model_store_s3 import S3ModelStore
            return S3ModelStore.from_settings(settings)  # type: ignore[return-value]
        return cls(settings.model_store)

    # -- paths ---------------------------------------------------------------------------------
    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def blob_path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 in hex")
        return self.blobs / f"{sha256}.onnx"

    def _version_dir(self, name: str, version: str) -> Path:
        return self.versions_dir / check_name("name", name) / check_name("version", version)

    def staging(self) -> Path:
        """A new, empty folder for one push in progress (on the store's file system, so the accepted
        file moves into place with a rename). The caller removes it (``discard``)."""
        tmp = self.root / "tmp"
        for _ in range(5):  # another push's ``discard`` may remove tmp/ between the two calls
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                return Path(tempfile.mkdtemp(dir=tmp, prefix="push-"))
            except FileNotFoundError:
                continue
        raise OSError(f"cannot create a staging folder in {tmp}")

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.parent.rmdir()  # tmp/, when no other push is in progress
        except OSError:
            pass

    # -- reading -------------------------------------------------------------------------------
    def refs(self) -> list[str]:
        return [r.ref for r in self.versions()]

    def has(self, model_ref: str) -> bool:
        """Whether ``model_ref`` ("name:version") is stored (retired versions included)."""
        try:
            name, version = parse_ref(model_ref)
        except StoreError:
            return False
        return (self._version_dir(name, version) / SPEC_FILE).is_file()

    def folder(self, model_ref: str) -> Path:
        """The version's folder: ``Detector.from_folder`` loads it. StoreError naming the stored
        versions when there is no such version."""
        name, version = parse_ref(model_ref)
        folder = self._version_dir(name, version)
        if not (folder / SPEC_FILE).is_file():
            known = self.refs()
            raise StoreError("unknown", f"model {model_ref} is not in the model store {self.root}; it holds "
                             f"{', '.join(known) if known else 'no models'}. Push it with `aimass models push`, "
                             "or check AIMASS_MODEL_STORE")
        return folder

    def spec(self, model_ref: str) -> dict[str, Any]:
        """The version's model.yaml, parsed."""
        folder = self.folder(model_ref)
        try:
            raw = yaml.safe_load((folder / SPEC_FILE).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise StoreError("corrupt", f"{folder / SPEC_FILE} cannot be read ({exc})") from None
        if not isinstance(raw, dict):
            raise StoreError("corrupt", f"{folder / SPEC_FILE} is not a mapping")
        return raw

    def meta(self, model_ref: str) -> dict[str, Any]:
        """The version's meta.json."""
        path = self.folder(model_ref) / META_FILE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError("corrupt", f"{path} cannot be read ({exc})") from None
        return meta if isinstance(meta, dict) else {}

    def get(self, model_ref: str) -> VersionRecord:
        return self._record(self.spec(model_ref), self.meta(model_ref))

    @staticmethod
    def _record(spec: dict[str, Any], meta: dict[str, Any]) -> VersionRecord:
        inp = spec.get("input") or {}
        return VersionRecord(
            name=str(spec.get("name", "")), version=str(spec.get("version", "")), format=str(spec.get("format", "")),
            input_width=int(inp.get("width") or 0), input_height=int(inp.get("height") or 0),
            classes=len(spec.get("classes") or ()), sha256=str(spec.get("sha256", "")),
            size_bytes=int(meta.get("size_bytes") or 0), licence=str(spec.get("licence") or meta.get("licence") or ""),
            created_ms=float(meta.get("created_ms") or 0.0), retired=bool(meta.get("retired")),
            retired_reason=str(meta.get("retired_reason") or ""))

    def versions(self) -> list[VersionRecord]:
        """Every stored version, by name then version (natural order). A folder that cannot be read
        is skipped (it cannot be served either); ``folder``/``get`` name its problem."""
        out = []
        if not self.versions_dir.is_dir():
            return out
        for name_dir in sorted(self.versions_dir.iterdir()):
            if not name_dir.is_dir() or not NAME_RE.match(name_dir.name):
                continue
            for vdir in sorted(name_dir.iterdir(), key=lambda p: _version_key(p.name)):
                if not NAME_RE.match(vdir.name) or not (vdir / SPEC_FILE).is_file():
                    continue  # a push's temporary folder (".tmp-...") or something else
                try:
                    out.append(self.get(f"{name_dir.name}:{vdir.name}"))
                except (StoreError, TypeError, ValueError):
                    continue
        return out

    def next_version(self, name: str) -> str:
        """The next free whole-number version of ``name`` ("1" for a new name)."""
        check_name("name", name)
        d = self.versions_dir / name
        numbers = [int(p.name) for p in d.iterdir() if p.name.isdigit()] if d.is_dir() else []
        return str(max(numbers, default=0) + 1)

    # -- writing -------------------------------------------------------------------------------
    def add(self, onnx_file: Path, spec: dict[str, Any], meta: dict[str, Any], *, move: bool = False) -> VersionRecord:
        """Store a validated version: ``onnx_file`` goes to its blob (moved when ``move``, else
        copied), then the version folder appears in one rename. ``spec`` is the model.yaml content
        (its ``file`` and ``sha256`` are set here); ``meta`` is merged into meta.json. StoreError
        ``exists`` when the version is already stored: versions are never overwritten."""
        from aimass_detector.model import sha256_file

        name, version = check_name("name", spec.get("name", "")), check_name("version", spec.get("version", ""))
        final = self._version_dir(name, version)
        if final.exists():
            raise self._exists(name, version)
        sha = sha256_file(Path(onnx_file))
        size = Path(onnx_file).stat().st_size
        blob = self._put_blob(Path(onnx_file), sha, move=move)
        created = now_ms()
        spec = {**spec, "name": name, "version": version,
                "file": os.path.relpath(blob, final), "sha256": sha}
        meta = {**meta, "ref": f"{name}:{version}", "sha256": sha, "size_bytes": size, "created_ms": created,
                "created": dt.datetime.fromtimestamp(created / 1000.0, dt.timezone.utc).isoformat(),
                "retired": False, "retired_ms": None, "retired_reason": ""}
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{version}-{uuid.uuid4().hex[:8]}"  # beside it: same relative blob path
        tmp.mkdir()
        try:
            header = f"# {name}:{version}, pushed to the model store (aimass models push). Do not edit: push a new version.\n"
            _write_atomic(tmp / SPEC_FILE, (header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)).encode(),
                          mode=0o444)
            _write_atomic(tmp / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
            try:
                os.rename(tmp, final)  # fails when another push created the version meanwhile
            except OSError:
                if final.exists():
                    raise self._exists(name, version) from None
                raise
            _fsync_dir(final.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.get(f"{name}:{version}")

    @staticmethod
    def _exists(name: str, version: str) -> StoreError:
        return StoreError("exists", f"model {name}:{version} is already in the store; versions are never overwritten. "
                          "Push it as a new version (--version, or leave it out for the next number)")

    def _put_blob(self, src: Path, sha: str, *, move: bool) -> Path:
        blob = self.blob_path(sha)
        if blob.is_file() and blob.stat().st_size == src.stat().st_size:
            return blob  # the same file is stored already (another version of it)
        self.blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=f".{sha[:16]}.", suffix=".tmp")
        os.close(fd)
        try:
            if move:
                os.replace(src, tmp)
            else:
                shutil.copyfile(src, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, blob)
            _fsync_dir(self.blobs)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return blob

    def retire(self, model_ref: str, reason: str = "") -> VersionRecord:
        """Mark a version retired (it stays in the store, listed as retired, and can no longer be
        routed). Whether it is still routed is the registry's check (service.Registry.retire)."""
        meta = self.meta(model_ref)
        if not meta.get("retired"):
            meta.update(retired=True, retired_ms=now_ms(), retired_reason=reason)
            _write_atomic(self.folder(model_ref) / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
        return self.get(model_ref)

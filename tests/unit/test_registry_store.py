"""The model store (aimass.model_store): content-addressed blobs, immutable version folders the
detector loads as they are, listing, retiring, and what it says about refs it does not hold."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from aimass.settings import RegistrySettings
from aimass_detector.model import load_spec, verify
from aimass.model_store import ModelStore, StoreError, check_name, parse_ref

MODELS = Path(__file__).resolve().parents[2] / "models"
PEDSSD = MODELS / "pedssd"


def _spec(name="ped", version="1") -> dict:
    spec = yaml.safe_load((PEDSSD / "model.yaml").read_text())
    spec.update(name=name, version=version)
    return spec


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_add_writes_a_read_only_blob_by_hash_and_a_folder_the_detector_reads(store, tmp_path):
    src = tmp_path / "m.onnx"
    shutil.copyfile(PEDSSD / "model.onnx", src)
    rec = store.add(src, _spec(), {"source": "m.onnx", "pushed_by": "test"})
    sha = load_spec(PEDSSD).sha256
    blob = store.root / "blobs" / "sha256" / f"{sha}.onnx"
    assert rec.ref == "ped:1" and rec.sha256 == sha and rec.format == "tf_ssd" and rec.classes == 2
    assert (rec.input_width, rec.input_height, rec.retired) == (300, 300, False)
    assert blob.is_file() and not blob.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert src.exists()  # copied, not moved
    folder = store.folder("ped:1")
    assert folder == store.root / "versions" / "ped" / "1"
    spec = load_spec(folder)  # exactly what the detector reads
    assert spec.onnx_path.resolve() == blob and spec.name == "ped" and spec.version == "1"
    verify(spec)  # the sha256 check at every load passes
    assert yaml.safe_load((folder / "model.yaml").read_text())["file"] == f"../../../blobs/sha256/{sha}.onnx"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source"] == "m.onnx" and meta["size_bytes"] == blob.stat().st_size and meta["retired"] is False
    assert not (store.root / "tmp").exists() and [p.name for p in (store.root / "versions" / "ped").iterdir()] == ["1"]


def test_two_versions_of_one_file_share_its_blob_and_versions_are_never_overwritten(store):
    store.add(PEDSSD / "model.onnx", _spec(version="1"), {})
    store.add(PEDSSD / "model.onnx", _spec(version="2"), {})
    assert len(list((store.root / "blobs" / "sha256").iterdir())) == 1
    with pytest.raises(StoreError, match="already in the store") as exc:
        store.add(PEDSSD / "model.onnx", _spec(version="2"), {})
    assert exc.value.reason == "exists"


def test_versions_lists_in_natural_order_and_skips_unfinished_folders(store):
    for v in ("10", "2", "1"):
        store.add(PEDSSD / "model.onnx", _spec(version=v), {})
    (store.root / "versions" / "ped" / ".tmp-3-abcd").mkdir()  # a push that died mid-way
    assert [r.ref for r in store.versions()] == ["ped:1", "ped:2", "ped:10"]
    assert store.next_version("ped") == "11" and store.next_version("other") == "1"


def test_folder_of_an_unknown_ref_names_the_refs_that_exist(store):
    store.add(PEDSSD / "model.onnx", _spec(), {})
    with pytest.raises(StoreError, match=r"nope:1 is not in the model store .* holds ped:1") as exc:
        store.folder("nope:1")
    assert exc.value.reason == "unknown"
    assert store.has("ped:1") and not store.has("ped:2") and not store.has("garbage") and not store.has("../x:1")


def test_names_must_be_safe_path_parts_without_colons():
    assert parse_ref("yolo11n:1.0-rc1") == ("yolo11n", "1.0-rc1")
    for bad in ("../etc", "a/b", ".hidden", "", "x" * 65, "with space"):
        with pytest.raises(StoreError, match="not allowed"):
            check_name("name", bad)
    with pytest.raises(StoreError, match="NAME:VERSION"):
        parse_ref("no-version")


def test_retire_marks_meta_only(store):
    store.add(PEDSSD / "model.onnx", _spec(), {})
    before = (store.folder("ped:1") / "model.yaml").read_bytes()
    rec = store.retire("ped:1", "replaced by ped:2")
    assert rec.retired and rec.retired_reason == "replaced by ped:2"
    assert store.meta("ped:1")["retired_ms"] > 0 and (store.folder("ped:1") / "model.yaml").read_bytes() == before
    assert [r.retired for r in store.versions()] == [True]


def test_from_settings_uses_the_model_store_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_MODEL_STORE", str(tmp_path / "s"))
    assert ModelStore.from_settings(RegistrySettings()).root == (tmp_path / "s").resolve()


def test_a_failed_blob_write_leaves_no_partial_blob(store, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        store.add(PEDSSD / "model.onnx", _spec(), {})
    blobs = store.root / "blobs" / "sha256"
    assert list(blobs.iterdir()) == [] and not store.has("ped:1")

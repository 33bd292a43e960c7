"""What a push must pass before a model reaches the store, in order, cheapest first:

1. name and version are valid (letters, digits, ``_ . -``), the format has an adapter;
2. the file is at most ``max_model_mb`` (counted while it is copied into the staging folder, so an
   oversized upload stops at the limit);
3. the file is not something else: pickles, zip archives (PyTorch ``.pt``/``.pth`` checkpoints,
   TorchScript, Keras ``.keras``), safetensors, HDF5, NumPy, TensorFlow Lite, compressed archives,
   executables, text are refused by their first bytes, and nothing is loaded to find out. Nothing here
   ever unpickles: only ONNX, a protobuf ``ModelProto``, goes on;
4. its top-level protobuf structure is an ONNX ``ModelProto`` (ir_version and graph present, every
   field within the file): a truncated download or a TensorFlow GraphDef stops here;
5. its sha256 matches ``--sha256`` (and the ``sha256`` of a ``--spec`` model.yaml) when given;
6. ONNX Runtime loads it (CPU); its graph inputs and metadata fill in what the push left out (input
   name, size, layout, dtype; class names from the ``names`` metadata Ultralytics exports write);
7. the model.yaml built from the push is valid and ``Detector.from_folder`` + ``Detector.probe`` run a
   synthetic batch whose real output shapes must fit the declared format.

Each failure is a ``PushRefused`` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import ast
import hashlib
import mmap
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from aimass.model_store import StoreError, check_name

Progress = Callable[[str], None]

CHUNK = 1 << 20

# Per-format defaults for what the graph cannot say (how the model was trained to see its input).
FORMAT_DEFAULTS: dict[str, dict[str, Any]] = {
    "yolov8": {"layout": "NCHW", "dtype": "float32", "channels": "RGB", "mean": [0, 0, 0], "std": [255, 255, 255],
               "resize": "letterbox"},
    "rtdetr": {"layout": "NCHW", "dtype": "float32", "channels": "RGB", "mean": [0, 0, 0], "std": [255, 255, 255],
               "resize": "stretch"},
    "nanodet": {"layout": "NCHW", "dtype": "float32", "channels": "BGR", "mean": [103.53, 116.28, 123.675],
                "std": [57.375, 57.12, 58.395], "resize": "stretch"},
    "tf_ssd": {"layout": "NHWC", "dtype": "uint8", "channels": "RGB", "resize": "stretch"},
}
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}
_NOT_DETECTION_TASKS = {"segment", "pose", "classify", "obb"}


class PushRefused(ValueError):
    """A push that was refused; nothing was stored. ``reason`` is a short code (``too_large``,
    ``not_onnx``, ``bad_onnx``, ``checksum``, ``bad_spec``, ``load_failed``, ``probe_failed``,
    ``exists``, ``bad_name``, ``not_found``), the message says what was wrong and what to do."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------- the push's options
def _split(text: str) -> list[str]:
    return [p.strip() for p in str(text).split(",") if p.strip()]


def parse_size(text: str) -> tuple[int, int]:
    """"640x480" (or "640") -> (640, 480)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+))?\s*", str(text))
    if not m:
        raise ValueError(f"input size {text!r} is not WIDTHxHEIGHT, e.g. 640x640")
    w = int(m.group(1))
    return w, int(m.group(2) or w)


def parse_class_map(text: str) -> dict[str, str]:
    """"car=vehicle,person=person" (or "car:vehicle") -> {"car": "vehicle", "person": "person"}."""
    out = {}
    for item in _split(text):
        k, sep, v = item.partition("=") if "=" in item else item.partition(":")
        if not sep or not k.strip() or not v.strip():
            raise ValueError(f"class map entry {item!r} is not MODEL_CLASS=SITE_LABEL")
        out[k.strip()] = v.strip()
    return out


def parse_floats(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in _split(text)]
    except ValueError:
        raise ValueError(f"{what} {text!r} is not three numbers, e.g. 0,0,0") from None
    if len(values) != 3:
        raise ValueError(f"{what} {text!r} needs three numbers (one per channel)")
    return values


@dataclass
class PushOptions:
    """What a push says about the model. Anything left None comes from the ``--spec`` model.yaml,
    else from the ONNX graph and its metadata, else from the format's defaults."""

    name: str | None = None
    version: str | None = None
    format: str | None = None
    spec: dict[str, Any] | None = None  # a model.yaml's content (``--spec``)
    spec_source: str = ""  # where ``spec`` came from, for messages
    sha256: str | None = None  # the checksum the file must have
    licence: str | None = None
    input_name: str | None = None
    input_width: int | None = None
    input_height: int | None = None
    layout: str | None = None
    dtype: str | None = None
    channels: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    resize: str | None = None
    classes: list[str] | None = None
    class_map: dict[str, str] | None = None
    score_threshold: float | None = None
    nms_iou: float | None = None
    max_detections: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific model.yaml keys (outputs, ...)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], spec_text: str | None = None) -> "PushOptions":
        """From the HTTP API's query parameters or JSON object: the CLI's option names with ``_``
        (``input_size: "640x640"``, ``classes: "a,b"`` or a list, ``class_map: "car=vehicle"`` or an
        object, ``extra``: an object of format-specific keys) and ``spec_text``, a model.yaml.
        Raises PushRefused(bad_spec) for values it cannot read."""
        known = {f.name for f in fields(cls)} - {"spec", "spec_source", "extra"}
        unknown = sorted(set(data) - known - {"input_size", "extra", "spec"})
        if unknown:
            raise PushRefused("bad_spec", f"unknown push parameters {unknown}; known: "
                              f"{sorted(known | {'input_size', 'extra', 'spec'})}")
        try:
            kw: dict[str, Any] = {}
            for key in ("name", "version", "format", "sha256", "licence", "input_name", "layout", "dtype", "channels",
                        "resize"):
                if data.get(key) not in (None, ""):
                    kw[key] = str(data[key])
            if data.get("input_size") not in (None, ""):
                kw["input_width"], kw["input_height"] = parse_size(data["input_size"])
            for key in ("input_width", "input_height", "max_detections"):
                if data.get(key) not in (None, ""):
                    kw[key] = int(data[key])
            for key in ("score_threshold", "nms_iou"):
                if data.get(key) not in (None, ""):
                    kw[key] = float(data[key])
            for key in ("mean", "std"):
                v = data.get(key)
                if v not in (None, ""):
                    kw[key] = [float(x) for x in v] if isinstance(v, (list, tuple)) else parse_floats(v, key)
            v = data.get("classes")
            if v not in (None, ""):
                kw["classes"] = [str(x) for x in v] if isinstance(v, (list, tuple)) else _split(v)
            v = data.get("class_map")
            if v not in (None, ""):
                kw["class_map"] = {str(k): str(x) for k, x in v.items()} if isinstance(v, Mapping) else parse_class_map(v)
            v = data.get("extra")
            if v not in (None, ""):
                if not isinstance(v, Mapping):
                    raise ValueError("extra must be an object of format-specific model.yaml keys")
                kw["extra"] = dict(v)
        except (TypeError, ValueError) as exc:
            raise PushRefused("bad_spec", f"push parameters: {exc}") from None
        spec_text = spec_text if spec_text is not None else data.get("spec")
        if spec_text:
            kw["spec"] = parse_spec_text(str(spec_text), "the model.yaml sent with the push")
            kw["spec_source"] = "the model.yaml sent with the push"
        return cls(**kw)


def parse_spec_text(text: str, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PushRefused("bad_spec", f"{source} is not valid YAML ({exc}). Fix it (models/README.md lists the keys).") from None
    if not isinstance(raw, dict):
        raise PushRefused("bad_spec", f"{source} is not a mapping of model.yaml keys (models/README.md lists them)")
    return raw


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PushRefused("bad_spec", f"--spec {path} cannot be read ({exc})") from None
    return parse_spec_text(text, f"--spec {path}")


# ---------------------------------------------------------------- size, checksum, copying
def stage_copy(source: Path | BinaryIO, dest: Path, max_bytes: int, display: str) -> tuple[str, int]:
    """Copy ``source`` (a path or a binary stream) to ``dest``, hashing it and stopping as soon as
    it passes ``max_bytes``. Returns (sha256, size)."""
    h = hashlib.sha256()
    size = 0
    own = isinstance(source, (str, Path))
    if own:
        p = Path(source)
        if not p.is_file():
            raise PushRefused("not_found", f"{display}: no such file" if not p.exists() else
                              f"{display} is not a regular file; push the .onnx file itself")
        if p.stat().st_size > max_bytes:
            raise too_large(display, p.stat().st_size, max_bytes)
    src = open(source, "rb") if own else source
    try:
        with open(dest, "wb") as out:
            while block := src.read(CHUNK):
                size += len(block)
                if size > max_bytes:
                    raise too_large(display, size, max_bytes, at_least=True)
                h.update(block)
                out.write(block)
    finally:
        if own:
            src.close()
    if size == 0:
        raise PushRefused("bad_onnx", f"{display} is empty; push the exported .onnx file")
    return h.hexdigest(), size


def too_large(display: str, size: int, max_bytes: int, at_least: bool = False) -> PushRefused:
    mb = 1024 * 1024
    what = f"more than {max_bytes / mb:g} MB" if at_least else f"{size / mb:.1f} MB"
    return PushRefused("too_large", f"{display} is {what}; the limit is {max_bytes / mb:g} MB (AIMASS_MAX_MODEL_MB). "
                       "Export a smaller model, or raise the limit on the registry")


def check_checksum(display: str, actual: str, expected: str | None, where: str = "--sha256") -> None:
    if not expected:
        return
    want = str(expected).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", want):
        raise PushRefused("checksum", f"{where} {expected!r} is not a sha256 (64 hex digits; sha256sum FILE)")
    if actual != want:
        raise PushRefused("checksum", f"{display} has sha256 {actual}, but {where} says {want}: the file is not the "
                          "one described (a corrupt or partial copy, or another export). Copy it again, or give "
                          "this file's checksum")


# ---------------------------------------------------------------- not ONNX? say what it is
_ZIP_HINT = ("Nothing in it is loaded: those archives hold pickles or code that run when opened. Export the model to "
             "ONNX (torch.onnx.export with dynamic_axes; Ultralytics: yolo export format=onnx dynamic=True) and push "
             "the .onnx file")
_EXPORT_HINT = "Export the model to ONNX and push the .onnx file"


def _zip_kind(path: Path) -> str:
    """What a zip archive probably is, from its member names only (the central directory; no member
    is read or extracted)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()[:2000]
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a zip archive"
    base = {n.rsplit("/", 1)[-1] for n in names}
    if "constants.pkl" in base or any(n.split("/", 2)[1:2] == ["code"] for n in names if n.count("/") >= 2):
        return "a TorchScript archive (a zip with pickles and TorchScript code)"
    if "data.pkl" in base:
        return "a PyTorch checkpoint (.pt/.pth: a zip holding a pickle)"
    if "model.weights.h5" in base or "config.json" in base and "metadata.json" in base:
        return "a Keras archive (.keras)"
    if any(n.endswith(".onnx") for n in names):
        return "an archive (zip) with an .onnx file inside: unpack it and push the .onnx file itself"
    return "a zip archive"


_ZIPS = ("a zip archive", "a TorchScript", "a PyTorch", "a Keras archive")


def identify_other(path: Path) -> str | None:
    """What the file is by its first bytes, when it is one of the formats that are not ONNX (and
    some must never be loaded at all); None when it is none of them."""
    with open(path, "rb") as f:
        head = f.read(512)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a Python pickle (protocol {head[1]}: PyTorch, joblib or scikit-learn files); unpickling runs code, " \
               "so it is never loaded"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return _zip_kind(path)
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "an HDF5 file (Keras .h5 weights)"
    if head[:6] == b"\x93NUMPY":
        return "a NumPy array file (.npy)"
    if head[:4] == b"GGUF":
        return "a GGUF file (llama.cpp)"
    if head[4:8] == b"TFL3":
        return "a TensorFlow Lite model (.tflite)"
    if len(head) >= 10 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100 * 1024 * 1024:
        return "a safetensors file (weights without a graph)"
    if head[:2] == b"\x1f\x8b":
        return "a gzip archive (a .tar.gz of a SavedModel?)"
    if head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or head[:6] == b"7z\xbc\xaf\x27\x1c" or head[257:262] == b"ustar":
        return "a compressed or tar archive"
    if head[:4] == b"\x7fELF" or head[:2] == b"MZ":
        return "an executable"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"[") or stripped[:5] in (b"<?xml", b"<net ") or head[:3] == b"\xef\xbb\xbf":
        return "a text file (JSON or XML: a TensorFlow.js model.json, an OpenVINO .xml?)"
    return None


# ModelProto's fields (onnx.proto) and their wire types: 0 varint, 2 length-delimited.
_MODEL_PROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def _varint(buf, pos: int, n: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(10):
        if pos >= n:
            raise EOFError
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise ValueError("a varint longer than 10 bytes")


def check_model_proto(path: Path, display: str) -> None:
    """Walk the file's top-level protobuf fields (without reading the graph): every field must be a
    valid protobuf field that ends inside the file, ModelProto's known fields must have their wire
    types, and ir_version (1) and graph (7) must be there. Cheap, and it catches truncation too."""
    bad = f"{display} is not an ONNX model"
    todo = "If it is an ONNX export, it is damaged (a truncated or partial copy?): copy or export it again"
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        n = len(buf)
        pos = 0
        seen: set[int] = set()
        while pos < n:
            start = pos
            try:
                tag, pos = _varint(buf, pos, n)
                fnum, wire = tag >> 3, tag & 7
                if fnum == 0 or wire not in (0, 1, 2, 5):
                    raise ValueError(f"byte {start} is not a protobuf field (field {fnum}, wire type {wire})")
                if fnum in _MODEL_PROTO_FIELDS and _MODEL_PROTO_FIELDS[fnum] != wire:
                    raise ValueError(f"field {fnum} at byte {start} has wire type {wire}, not ModelProto's "
                                     f"{_MODEL_PROTO_FIELDS[fnum]}")
                if wire == 0:
                    _, pos = _varint(buf, pos, n)
                elif wire == 1:
                    pos += 8
                elif wire == 5:
                    pos += 4
                else:
                    length, pos = _varint(buf, pos, n)
                    pos += length
                if pos > n:
                    raise EOFError
            except EOFError:
                raise PushRefused("bad_onnx", f"{bad}: it ends at byte {n} inside a field that starts at byte {start} "
                                  f"(truncated). {todo}") from None
            except ValueError as exc:
                raise PushRefused("bad_onnx", f"{bad}: its bytes are not an ONNX ModelProto ({exc}). {todo}; "
                                  f"otherwise {_EXPORT_HINT.lower()}") from None
            seen.add(fnum)
    missing = [name for num, name in ((1, "ir_version"), (7, "graph")) if num not in seen]
    if missing:
        raise PushRefused("bad_onnx", f"{bad}: it parses as a protobuf but has no {' or '.join(missing)} (a TensorFlow "
                          f"SavedModel or another protobuf?). {_EXPORT_HINT}")


def refuse_non_onnx(path: Path, display: str) -> None:
    """Steps 3 and 4: refuse anything that is not an ONNX ModelProto, reading bytes only."""
    kind = identify_other(path)
    if kind:
        hint = _ZIP_HINT if kind.startswith(_ZIPS) else _EXPORT_HINT
        raise PushRefused("not_onnx", f"{display} is not an ONNX model: it is {kind}. {hint}. Only ONNX files are "
                          "accepted")
    check_model_proto(path, display)


# ---------------------------------------------------------------- ONNX Runtime: what the graph says
@dataclass
class GraphFacts:
    inputs: list[tuple[str, list, str]]  # (name, shape with ints or names, ORT type)
    outputs: list[tuple[str, list, str]]
    metadata: dict[str, str]


def inspect_graph(path: Path, display: str) -> GraphFacts:
    """Load the file in ONNX Runtime (CPU, no graph optimisation: quick) for its inputs, outputs and
    metadata; PushRefused(load_failed) when it does not load."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        text = str(exc).replace(str(path), display)
        raise PushRefused("load_failed", f"{display}: ONNX Runtime cannot load it ({text}). Check that it is a "
                          "complete ONNX export with its weights inside (no external data files) and an opset this "
                          "onnxruntime supports") from None

    def io(items):
        return [(i.name, [d if isinstance(d, int) else str(d) for d in (i.shape or [])], i.type) for i in items]
    meta = sess.get_modelmeta()
    facts = GraphFacts(io(sess.get_inputs()), io(sess.get_outputs()), dict(meta.custom_metadata_map or {}))
    del sess
    return facts


def _literal(text: str, limit: int = 1 << 20):
    """A Python literal from ONNX metadata (Ultralytics writes ``names`` as a dict repr); literals
    only, never code."""
    if not text or len(text) > limit:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def classes_from_metadata(metadata: Mapping[str, str]) -> list[str] | None:
    """Class names in index order from the ``names`` metadata ({0: 'person', ...} or a list)."""
    names = _literal(metadata.get("names", ""))
    if isinstance(names, dict) and names and all(isinstance(k, int) for k in names):
        if sorted(names) == list(range(len(names))):
            return [str(names[i]) for i in range(len(names))]
    if isinstance(names, (list, tuple)) and names:
        return [str(x) for x in names]
    return None


def _image_input(facts: GraphFacts) -> tuple[str, list, str] | None:
    for item in facts.inputs:
        if len(item[1]) == 4:
            return item
    return facts.inputs[0] if facts.inputs else None


# ---------------------------------------------------------------- model.yaml
def build_spec(opts: PushOptions, facts: GraphFacts, display: str) -> dict[str, Any]:
    """model.yaml content for the push: the options, over the ``--spec`` file, over what the graph
    and its metadata say, over the format's defaults. ``sha256`` and ``file`` are set by the caller."""
    spec = dict(opts.spec or {})
    spec.pop("file", None)
    spec.pop("sha256", None)
    src = opts.spec_source or "--spec"

    def pick(key: str, value):
        if value is not None:
            spec[key] = value

    pick("name", opts.name)
    pick("version", opts.version)
    pick("format", opts.format)
    pick("licence", opts.licence)
    fmt = str(spec.get("format") or "")
    if not fmt:
        raise PushRefused("bad_spec", f"{display}: no format given; say which output format the model has with "
                          f"--format ({', '.join(sorted(FORMAT_DEFAULTS))}; models/README.md describes them)")
    from aimass_detector.adapters import ADAPTERS
    if fmt not in ADAPTERS:
        raise PushRefused("bad_spec", f"{display}: format {fmt!r} has no adapter; choose one of "
                          f"{', '.join(sorted(ADAPTERS))} (models/README.md describes them)")
    task = facts.metadata.get("task", "")
    if task in _NOT_DETECTION_TASKS:
        raise PushRefused("bad_spec", f"{display} is an Ultralytics '{task}' model (its metadata says so); the detector "
                          "serves detection models only: export a detection model (task=detect)")

    given_input = spec.get("input")
    if given_input is not None and not isinstance(given_input, dict):
        raise PushRefused("bad_spec", f"{src}: 'input' must be a mapping (name, width, height, ...)")
    inp = dict(given_input or {})
    image = _image_input(facts)
    graph_shape = image[1] if image else []
    for key, value in (("name", opts.input_name), ("layout", opts.layout), ("dtype", opts.dtype),
                       ("channels", opts.channels), ("mean", opts.mean), ("std", opts.std), ("resize", opts.resize),
                       ("width", opts.input_width), ("height", opts.input_height)):
        if value is not None:
            inp[key] = value
    if "name" not in inp and image:
        inp["name"] = image[0]
    if "layout" not in inp and len(graph_shape) == 4:
        if graph_shape[1] == 3 and graph_shape[3] != 3:
            inp["layout"] = "NCHW"
        elif graph_shape[3] == 3 and graph_shape[1] != 3:
            inp["layout"] = "NHWC"
    if "dtype" not in inp and image and image[2] in _ORT_DTYPES:
        inp["dtype"] = _ORT_DTYPES[image[2]]
    for key, value in FORMAT_DEFAULTS.get(fmt, {}).items():
        inp.setdefault(key, value)
    if ("width" not in inp or "height" not in inp) and len(graph_shape) == 4:
        h_axis, w_axis = (2, 3) if str(inp.get("layout", "NCHW")).upper() == "NCHW" else (1, 2)
        if isinstance(graph_shape[h_axis], int) and isinstance(graph_shape[w_axis], int) and graph_shape[w_axis] > 0:
            inp.setdefault("width", graph_shape[w_axis])
            inp.setdefault("height", graph_shape[h_axis])
    if "width" not in inp or "height" not in inp:
        imgsz = _literal(facts.metadata.get("imgsz", ""))
        if isinstance(imgsz, (list, tuple)) and len(imgsz) == 2 and all(isinstance(x, int) for x in imgsz):
            inp.setdefault("height", imgsz[0])  # Ultralytics writes [height, width]
            inp.setdefault("width", imgsz[1])
    if "width" not in inp or "height" not in inp:
        raise PushRefused("bad_spec", f"{display}: the graph's input size is dynamic ({graph_shape}) and the push does "
                          "not say which size to feed; give --input-size WIDTHxHEIGHT (the size it was trained at)")
    spec["input"] = inp

    if opts.classes is not None:
        spec["classes"] = list(opts.classes)
    if not spec.get("classes"):
        from_meta = classes_from_metadata(facts.metadata)
        if from_meta:
            spec["classes"] = from_meta
    if not spec.get("classes"):
        raise PushRefused("bad_spec", f"{display}: no class names; give --classes a,b,c (in the model's index order) "
                          "or a --spec model.yaml with 'classes' (the ONNX metadata has no 'names')")
    if opts.class_map is not None:
        spec["class_map"] = dict(opts.class_map)
    if not spec.get("class_map"):
        spec["class_map"] = {str(c): str(c) for c in spec["classes"]}  # every class is its own site label
    pick("score_threshold", opts.score_threshold)
    pick("nms_iou", opts.nms_iou)
    pick("max_detections", opts.max_detections)
    spec.update(opts.extra or {})
    for kind in ("name", "version"):
        if not spec.get(kind):
            raise PushRefused("bad_spec", f"{display}: no model {kind}; give --{kind}")
        try:
            spec[kind] = check_name(kind, str(spec[kind]))
        except StoreError as exc:
            raise PushRefused("bad_name", f"{display}: {exc}") from None
    order = ["name", "version", "format", "licence", "input", "classes", "class_map", "score_threshold", "nms_iou",
             "max_detections"]
    return {**{k: spec[k] for k in order if k in spec}, **{k: v for k, v in spec.items() if k not in order}}


def write_spec(folder: Path, spec: dict[str, Any], sha256: str, onnx_name: str = "model.onnx") -> None:
    text = yaml.safe_dump({**spec, "file": onnx_name, "sha256": sha256}, sort_keys=False, allow_unicode=True)
    (folder / "model.yaml").write_text(text, encoding="utf-8")


def probe_folder(folder: Path, display: str) -> dict[str, Any]:
    """Load the staged folder as the detector will (ONNX Runtime, CPU) and run ``Detector.probe``:
    PushRefused(probe_failed) with the detector's reason when the model does not fit its model.yaml."""
    from aimass_detector.engine import Detector
    from aimass_detector.model import ModelError

    try:
        detector = Detector.from_folder(folder, providers=["CPUExecutionProvider"])
        facts = detector.probe()
    except ModelError as exc:
        text = str(exc).replace(f"model folder {folder}", display).replace(str(folder), display)
        raise PushRefused("probe_failed", f"{text} (the push's model.yaml is built from --spec and the options)") from None
    return facts

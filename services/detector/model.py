"""A model folder (model.yaml + model.onnx): its parsed description, its integrity check, and the
ONNX Runtime session that runs it.

The YAML is the contract between whoever brings a model and the detector: format (which adapter
decodes it), input geometry and normalisation, class names and the class -> site label map. Anything
format-specific (output names, strides, ...) stays in ``ModelSpec.extra`` for the adapter to read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

SPEC_FILE = "model.yaml"
DEFAULT_ONNX_FILE = "model.onnx"

# Preference order when the caller does not choose: fastest first, and only those the installed
# onnxruntime build offers (CPU is always there, and ONNX Runtime falls back to it per node).
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class ModelError(RuntimeError):
    """A model folder that cannot be used. The message says what is wrong, where, and what to do."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    width: int
    height: int
    layout: str  # NCHW or NHWC
    dtype: str  # float32 or uint8
    channels: str  # BGR or RGB
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in ``channels`` order
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "stretch"  # stretch (plain resize) or letterbox (aspect kept, grey padding)


@dataclass(frozen=True)
class ModelSpec:
    folder: Path
    name: str
    version: str
    format: str
    onnx_path: Path
    sha256: str
    licence: str
    input: InputSpec
    classes: tuple[str, ...]
    class_map: dict[str, str]
    score_threshold: float
    nms_iou: float
    max_detections: int
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific keys, read by the adapter


_KNOWN_KEYS = {"name", "version", "format", "file", "sha256", "licence", "license", "input", "classes",
               "class_map", "score_threshold", "nms_iou", "max_detections"}


def _fail(folder: Path, what: str, todo: str) -> ModelError:
    return ModelError(f"model folder {folder}: {what}. {todo}")


def load_spec(folder: str | os.PathLike) -> ModelSpec:
    """Parse and validate ``folder/model.yaml``; does not read the ONNX file (see ``verify``)."""
    folder = Path(folder).expanduser().resolve()
    spec_path = folder / SPEC_FILE
    if not folder.is_dir():
        raise _fail(folder, "no such folder", "Point model_dir (AIMASS_MODEL_DIR) at a folder holding "
                    "model.yaml and model.onnx, e.g. models/nanodet-g-416.")
    if not spec_path.is_file():
        raise _fail(folder, f"{SPEC_FILE} is missing", "Add a model.yaml describing the model "
                    "(see models/README.md for its keys).")
    try:
        raw = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _fail(folder, f"{SPEC_FILE} is not valid YAML ({exc})", "Fix the file.") from None
    if not isinstance(raw, dict):
        raise _fail(folder, f"{SPEC_FILE} is not a mapping", "Fix the file (see models/README.md).")

    def need(key: str) -> Any:
        if key not in raw or raw[key] in (None, ""):
            raise _fail(folder, f"{SPEC_FILE} has no '{key}'", f"Add '{key}' (see models/README.md).")
        return raw[key]

    try:
        inp = need("input")
        layout = str(inp.get("layout", "NCHW")).upper()
        dtype = str(inp.get("dtype", "float32"))
        channels = str(inp.get("channels", "RGB")).upper()
        resize = str(inp.get("resize", "stretch")).lower()
        if layout not in ("NCHW", "NHWC") or dtype not in ("float32", "uint8") or channels not in ("RGB", "BGR"):
            raise ValueError(f"input layout/dtype/channels {layout}/{dtype}/{channels} not supported "
                             "(NCHW|NHWC, float32|uint8, RGB|BGR)")
        if resize not in ("stretch", "letterbox"):
            raise ValueError(f"input resize '{resize}' not supported (stretch|letterbox)")
        input_spec = InputSpec(
            name=str(inp["name"]), width=int(inp["width"]), height=int(inp["height"]), layout=layout,
            dtype=dtype, channels=channels,
            mean=tuple(float(x) for x in inp.get("mean", (0.0, 0.0, 0.0))),
            std=tuple(float(x) for x in inp.get("std", (1.0, 1.0, 1.0))),
            resize=resize,
        )
        if input_spec.width <= 0 or input_spec.height <= 0:
            raise ValueError(f"input size {input_spec.width}x{input_spec.height} is not positive")
        if len(input_spec.mean) != 3 or len(input_spec.std) != 3 or 0.0 in input_spec.std:
            raise ValueError("input mean and std need 3 values each, std non-zero")
        classes = tuple(str(c) for c in need("classes"))
        class_map = {str(k): str(v) for k, v in (raw.get("class_map") or {}).items()}
        unknown = sorted(set(class_map) - set(classes))
        if unknown:
            raise ValueError(f"class_map names classes the model does not have: {unknown}")
        spec = ModelSpec(
            folder=folder,
            name=str(need("name")),
            version=str(need("version")),
            format=str(need("format")),
            onnx_path=folder / str(raw.get("file") or DEFAULT_ONNX_FILE),
            sha256=str(need("sha256")).lower(),
            licence=str(raw.get("licence") or raw.get("license") or ""),
            input=input_spec,
            classes=classes,
            class_map=class_map,
            score_threshold=float(raw.get("score_threshold", 0.4)),
            nms_iou=float(raw.get("nms_iou", 0.5)),
            max_detections=int(raw.get("max_detections", 100)),
            extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
        )
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise _fail(folder, f"{SPEC_FILE} is invalid: {detail}", "Fix the file (see models/README.md).") from None
    if not 0.0 <= spec.score_threshold <= 1.0 or not 0.0 < spec.nms_iou <= 1.0 or spec.max_detections < 1:
        raise _fail(folder, "score_threshold must be in [0,1], nms_iou in (0,1], max_detections >= 1",
                    "Fix model.yaml.")
    return spec


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(spec: ModelSpec) -> None:
    """Check the ONNX file exists and matches the sha256 in model.yaml (a truncated copy or a swapped
    file must never serve silently)."""
    if not spec.onnx_path.is_file():
        raise _fail(spec.folder, f"{spec.onnx_path.name} is missing",
                    "Copy the model file into the folder (or fix 'file' in model.yaml).")
    actual = sha256_file(spec.onnx_path)
    if actual != spec.sha256:
        raise _fail(spec.folder, f"{spec.onnx_path.name} has sha256 {actual}, model.yaml says {spec.sha256}",
                    "The file is corrupt or not the one described: copy it again, or if it is a new "
                    "model, put its sha256 (sha256sum model.onnx) and a new version in model.yaml.")


def choose_providers(requested: Sequence[str] | None = None,
                     available: Sequence[str] | None = None) -> list[str]:
    """Providers to ask ONNX Runtime for, best first. ``requested`` (full names or aliases such as
    ``cuda``) overrides the default order; asking for one this build lacks is an error, since silently
    running a GPU deployment on CPU is worse than not starting."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if not requested:
        chosen = [p for p in PROVIDER_PREFERENCE if p in available]
        return chosen or ["CPUExecutionProvider"]
    chosen = []
    for p in requested:
        name = PROVIDER_ALIASES.get(p.strip().lower(), p.strip())
        if name not in available:
            raise ModelError(f"ONNX Runtime provider {p!r} is not available in this build (available: "
                             f"{', '.join(available)}). Install onnxruntime-gpu for CUDA/TensorRT, or "
                             "leave providers empty to use the best available.")
        if name not in chosen:
            chosen.append(name)
    return chosen


# Values ONNX Runtime's CUDA provider accepts for cudnn_conv_algo_search.
CUDNN_CONV_ALGO_SEARCH = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")


@dataclass(frozen=True)
class GpuOptions:
    """How a session uses the GPU (the detector_* settings); ignored by the CPU provider."""

    device_id: int = 0  # CUDA device ordinal; CUDA_DEVICE_ORDER=PCI_BUS_ID makes it match nvidia-smi's numbering
    cudnn_conv_algo_search: str = "HEURISTIC"
    trt_fp16: bool = False

    def __post_init__(self):
        if self.device_id < 0:
            raise ValueError(f"device_id {self.device_id} is negative; use the GPU's index (0 for the first)")
        if self.cudnn_conv_algo_search not in CUDNN_CONV_ALGO_SEARCH:
            raise ValueError(f"cudnn_conv_algo_search {self.cudnn_conv_algo_search!r} is not one of "
                             f"{', '.join(CUDNN_CONV_ALGO_SEARCH)}")


def trt_cache_dir() -> Path:
    return Path(os.environ.get("AIMASS_TRT_CACHE", Path.home() / ".cache" / "aimass" / "trt"))


def _provider_options(name: str, gpu: GpuOptions | None = None) -> dict[str, Any]:
    """The options ONNX Runtime gets for provider ``name`` (a pure dict: nothing is created but the
    TensorRT cache folder)."""
    gpu = gpu or GpuOptions()
    if name == "CUDAExecutionProvider":
        return {
            "device_id": gpu.device_id,
            # HEURISTIC picks cuDNN's convolution algorithms without the EXHAUSTIVE benchmark, which
            # costs seconds per new input shape, and the detector's batch size varies.
            "cudnn_conv_algo_search": gpu.cudnn_conv_algo_search,
            # Copies on the compute stream: the run never reads an input whose copy is still in flight.
            "do_copy_in_default_stream": True,
            # Grow the memory arena by what a run asks for, not to the next power of two: several
            # sessions (detector_sessions, a canary beside the active model) share one GPU.
            "arena_extend_strategy": "kSameAsRequested",
        }
    if name == "TensorrtExecutionProvider":
        # Building a TensorRT engine takes minutes; cache it so restarts and hot swaps are fast.
        # The cache file names carry the precision, so fp16 and fp32 engines do not collide.
        cache = trt_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        return {"device_id": gpu.device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_fp16_enable": gpu.trt_fp16}
    return {}


def create_session(spec: ModelSpec, providers: Sequence[str] | None = None, threads: int | None = None,
                   gpu: GpuOptions | None = None, spinning: bool | None = None):
    """Verify the file and open an ONNX Runtime session. Returns ``(session, providers_in_use)``;
    the latter is what ONNX Runtime actually registered (it drops a GPU provider whose libraries
    fail to load), so it is what the worker should log. ``gpu`` configures CUDA and TensorRT;
    ``spinning`` whether idle intra-op threads spin (None: ONNX Runtime's default, they do)."""
    import onnxruntime as ort

    verify(spec)
    chosen = choose_providers(providers)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1  # one graph branch at a time; the parallelism is intra-op
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        session = ort.InferenceSession(str(spec.onnx_path), sess_options=opts,
                                       providers=[(p, _provider_options(p, gpu)) for p in chosen])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise _fail(spec.folder, f"ONNX Runtime cannot load {spec.onnx_path.name} ({exc})",
                    "Check that the file is an ONNX model this onnxruntime version supports.") from None
    return session, list(session.get_providers())

"""``Detector``: one model folder, ready to turn BGR frames into ``DetectedObject`` lists.

It ties the pieces together and adds nothing of its own: model.yaml + sha256 check + ONNX Runtime
session (model.py), the format's adapter (adapters/), and one run per batch: ``session.run``, or
on a GPU, IO binding (``BoundRunner``). ``probe`` runs a synthetic batch and checks the real output
tensors against the format: the model registry refuses an upload that fails it. ``detect`` is three
stages, ``prepare`` (frames into input buffers), ``run`` and ``decode``, which a worker may call on
different threads for different batches (one ``run`` at a time: IO binding is not thread-safe);
``DetectorPool`` holds several Detectors, each with its own session, and runs batches on them at once.
"""

from __future__ import annotations

import os
import queue
import statistics
import time
from typing import Any, Callable, Sequence, TypeVar

import cv2
import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.adapters import Adapter, adapter_for
from aimass_detector.adapters.base import DYNAMIC_BATCH_HINT
from aimass_detector.model import GpuOptions, ModelError, ModelSpec, create_session, load_spec
from aimass_detector.preprocess import BadImage, decode_jpeg

__all__ = ["Detector", "DetectorPool", "Prepared", "BoundRunner", "BadImage", "decode_jpeg", "use_io_binding"]

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
IO_BINDING_MODES = ("auto", "on", "off")


def use_io_binding(mode: str) -> bool:
    """Whether a session runs through IO binding, whatever its providers. "auto" is off: plain ``session.run`` was as fast on the CPU and faster on an H100 with CUDA, where
    IO binding's synchronous copy from pageable memory cost 1.2-4.9 ms more a batch of 4-16 (docs/gpu.md)."""
    if mode not in IO_BINDING_MODES:
        raise ValueError(f"io_binding {mode!r} is not one of {', '.join(IO_BINDING_MODES)}")
    return mode == "on"


def binding_device(providers: Sequence[str]) -> str:
    """Where IO binding puts the inputs: on the GPU when a GPU provider comes first, else in CPU memory."""
    return "cuda" if providers and providers[0] in GPU_PROVIDERS else "cpu"


class BoundRunner:
    """Runs a session through IO binding: each input is copied into an OrtValue on ``device`` that is
    kept while the batch shape stays the same (no device allocation per batch), and outputs are
    bound to CPU memory, where the decoders read them. Not thread-safe, like the Detector owning it.

    Inputs are copied from the adapter's ordinary (pageable) numpy buffer. ONNX Runtime's Python API
    cannot give it pinned memory here: "cuda_pinned" is no OrtValue device type, and pinned
    (HOST_ACCESSIBLE) OrtValues (``ortvalue_from_shape_and_type(memory_info=...)``, 1.31) come only
    from an EP device registered as a plugin library, which the built-in CUDA provider this session
    uses is not. Staging a batch through pinned memory would add a host copy as large as the one it
    saves, so only packing straight into pinned memory would gain anything (docs/gpu.md).
    """

    def __init__(self, session, device: str = "cpu", device_id: int = 0):
        self.session = session
        self.device = device
        self.device_id = device_id if device != "cpu" else 0
        self._binding = session.io_binding()
        self._inputs: dict[str, tuple[tuple, Any]] = {}  # name -> ((shape, dtype), OrtValue on the device)

    def run(self, names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        binding = self._binding
        for name, arr in feeds.items():
            binding.bind_ortvalue_input(name, self._on_device(name, arr))
        binding.clear_binding_outputs()
        for name in names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()  # in the order bound: ``names``

    def _on_device(self, name: str, arr: np.ndarray):
        """``arr`` copied into this input's device OrtValue (a new one when the shape changed)."""
        import onnxruntime as ort

        arr = np.ascontiguousarray(arr)
        key = (arr.shape, arr.dtype)
        held = self._inputs.get(name)
        if held is None or held[0] != key:
            value = ort.OrtValue.ortvalue_from_shape_and_type(arr.shape, arr.dtype.type, self.device, self.device_id)
            self._inputs[name] = held = (key, value)
        held[1].update_inplace(arr)
        return held[1]


class Prepared:
    """A batch ready to run: its feeds, and the sizes of its frames (to map boxes back). Its input
    buffers go back to the adapter that took them once the run read them (``release``, once)."""

    __slots__ = ("adapter", "feeds", "sizes")

    def __init__(self, adapter: Adapter, feeds: dict[str, np.ndarray], sizes: list[tuple[int, int]]):
        self.adapter, self.feeds, self.sizes = adapter, feeds, sizes

    def release(self) -> None:
        if self.feeds is not None:
            self.adapter.release(self.feeds)
            self.feeds = None


class _Named:
    """The model's identity, from its model.yaml (``spec``)."""

    spec: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version


class Detector(_Named):
    def __init__(self, spec: ModelSpec, session, adapter: Adapter, providers: Sequence[str],
                 io_binding: str = "auto", device_id: int = 0):
        self.spec = spec
        self.session = session
        self.adapter = adapter
        self._providers = list(providers)
        adapter.check_session(session.get_inputs(), session.get_outputs())
        self._bound = (BoundRunner(session, binding_device(self._providers), device_id)
                       if use_io_binding(io_binding) else None)

    @classmethod
    def from_folder(cls, path: str | os.PathLike, providers: Sequence[str] | None = None,
                    threads: int | None = None, gpu: GpuOptions | None = None,
                    io_binding: str = "auto", spinning: bool | None = None) -> "Detector":
        """Load ``path/model.yaml`` and ``model.onnx``; raises ``ModelError`` saying what to fix.
        ``providers`` overrides the TensorRT > CUDA > CPU choice; ``threads`` sets intra-op threads and
        ``spinning`` whether they spin while idle (None: ONNX Runtime's default); ``gpu`` configures
        CUDA/TensorRT; ``io_binding`` is auto, on or off (``use_io_binding``)."""
        if io_binding not in IO_BINDING_MODES:  # before loading anything
            raise ValueError(f"io_binding {io_binding!r} is not one of {', '.join(IO_BINDING_MODES)}")
        spec = load_spec(path)
        adapter = adapter_for(spec)  # before the session: a bad format fails without loading weights
        gpu = gpu or GpuOptions()
        session, in_use = create_session(spec, providers=providers, threads=threads, gpu=gpu, spinning=spinning)
        return cls(spec, session, adapter, in_use, io_binding=io_binding, device_id=gpu.device_id)

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime providers actually in use, best first."""
        return list(self._providers)

    @property
    def io_binding(self) -> bool:
        """Whether batches run through IO binding (else ``session.run``)."""
        return self._bound is not None

    @property
    def input_size(self) -> tuple[int, int]:
        return self.spec.input.width, self.spec.input.height

    def decode_jpeg(self, data: bytes) -> np.ndarray:
        """JPEG -> BGR, decoded at a reduced scale when the frame is much larger than the model
        input (boxes are normalised, so this never changes the result's meaning)."""
        w, h = self.input_size
        return decode_jpeg(data, min_width=w, min_height=h)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedObject]]:
        """BGR uint8 frames of any sizes -> per frame, its objects (boxes normalised to that frame),
        with one run for the whole batch: ``prepare``, ``run`` and ``decode`` in turn."""
        if len(images) == 0:
            return []
        prepared = self.prepare(images)
        return self.decode(prepared, self.run(prepared))

    # The three stages of ``detect``, for a worker that runs them on different threads: while the model
    # runs one batch, the next is prepared and the last decoded, so the run never waits on the CPU work.
    def prepare(self, images: Sequence[np.ndarray]) -> "Prepared":
        """Frames -> the model's input feeds, in input buffers of their own (given back by ``run``)."""
        return Prepared(self.adapter, self.adapter.prepare(images), [(img.shape[1], img.shape[0]) for img in images])

    def run(self, prepared: "Prepared") -> dict[str, np.ndarray]:
        """One run of a prepared batch: its raw outputs by name. The input buffers are given back after."""
        names = self.adapter.output_names
        try:
            return dict(zip(names, self.infer(names, prepared.feeds)))
        finally:
            prepared.release()

    def decode(self, prepared: "Prepared", outputs: dict[str, np.ndarray]) -> list[list[DetectedObject]]:
        """A run's raw outputs -> per frame of the prepared batch, its objects."""
        return self.adapter.decode(outputs, prepared.sizes)

    def infer(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One run of prepared ``feeds`` (``adapter.prepare``), as ``detect`` runs it (``session.run`` or IO
        binding): the outputs ``names``, as numpy arrays in CPU memory."""
        if self._bound is None:
            return self.session.run(names, feeds)
        return self._bound.run(names, feeds)

    def warmup(self, batch: int = 1) -> None:
        """One run on a blank batch, so the first real frame does not pay for allocator and kernel
        set-up (or, on TensorRT, the engine build). Its outputs go through ``check_outputs``, so a
        model whose outputs do not fit its format fails here with ``ModelError``, before serving."""
        w, h = self.input_size
        frames = [np.zeros((h, w, 3), np.uint8)] * batch
        outputs = self._run(frames, self.adapter.output_names)
        self.adapter.check_outputs(outputs, batch)
        self.adapter.decode(outputs, [(w, h)] * batch)

    def _run(self, frames: Sequence[np.ndarray], names: list[str] | None) -> dict[str, np.ndarray]:
        """One run on ``frames``; a failure becomes a ``ModelError`` saying what to fix."""
        feeds = self.adapter.prepare(frames)
        names = names or [o.name for o in self.session.get_outputs()]
        try:
            return dict(zip(names, self.infer(names, feeds)))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/... types
            hint = "Check that model.yaml's input (size, layout, dtype) is what the model was exported with."
            fixed = [i.shape[0] for i in self.session.get_inputs()
                     if i.shape and isinstance(i.shape[0], int) and i.shape[0] != len(frames)]
            if fixed:
                hint = f"The graph's input has a fixed batch of {fixed[0]}. {DYNAMIC_BATCH_HINT}"
            raise ModelError(f"model folder {self.spec.folder}: one run on a batch of {len(frames)} "
                             f"{self.spec.input.width}x{self.spec.input.height} frames failed ({exc}). {hint}") from None

    def probe(self, batch: int = 2, runs: int = 3) -> dict[str, Any]:
        """Run one synthetic batch of ``batch`` frames, check the real output tensors against the
        format (``Adapter.check_outputs``), decode them, then time ``runs`` more runs. Raises
        ``ModelError`` saying what to fix when the model does not fit its model.yaml; otherwise
        returns facts for the registry (JSON-ready)::

            {"name", "version", "format", "providers": [...], "io_binding": bool, "batch": 2,
             "inputs": {name: {"shape": [...], "dtype": "float32"}},      # as fed
             "outputs": {name: {"shape": [...], "dtype": "float32"}},     # every graph output
             "seconds_first_run", "seconds_per_run" (median of ``runs``), "seconds_per_frame",
             "detections": [objects decoded per synthetic frame],
             "metadata": {...}}                                           # the ONNX metadata_props

        The frames are grey scenes with a few flat shapes at the input size and at 16:9 and 9:16
        (so a letterbox pads both ways); what they detect is not judged, only that decoding works.
        """
        if batch < 1 or runs < 1:
            raise ValueError("probe needs batch >= 1 and runs >= 1")
        w, h = self.input_size
        frames = [_synthetic_frame(*size) for size in
                  ([(w, h), (640, 360), (360, 640)] * batch)[:batch]]
        sizes = [(f.shape[1], f.shape[0]) for f in frames]
        feeds = self.adapter.prepare(frames)
        inputs = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()}
        start = time.perf_counter()
        outputs = self._run(frames, None)
        first = time.perf_counter() - start
        self.adapter.check_outputs(outputs, batch)
        try:
            results = self.adapter.decode({k: outputs[k] for k in self.adapter.output_names}, sizes)
        except ModelError:
            raise
        except Exception as exc:  # a decoder bug or an output check that let something through
            raise ModelError(f"model folder {self.spec.folder}: outputs fit format '{self.spec.format}' but "
                             f"decoding them failed ({type(exc).__name__}: {exc}). Check model.yaml's "
                             "format-specific keys (models/README.md).") from None
        if len(results) != batch:
            raise ModelError(f"model folder {self.spec.folder}: decoding a batch of {batch} gave "
                             f"{len(results)} results. Check the export's batch dimension.")
        names = self.adapter.output_names
        times = []
        feeds = self.adapter.prepare(frames)
        for _ in range(runs):
            t0 = time.perf_counter()
            self.infer(names, feeds)
            times.append(time.perf_counter() - t0)
        per_run = statistics.median(times)
        meta = self.session.get_modelmeta()
        return {
            "name": self.spec.name,
            "version": self.spec.version,
            "format": self.spec.format,
            "providers": self.providers,
            "io_binding": self.io_binding,
            "batch": batch,
            "inputs": inputs,
            "outputs": {k: {"shape": [int(d) for d in v.shape], "dtype": str(v.dtype)} for k, v in outputs.items()},
            "seconds_first_run": first,
            "seconds_per_run": per_run,
            "seconds_per_frame": per_run / batch,
            "detections": [len(objs) for objs in results],
            "metadata": dict(getattr(meta, "custom_metadata_map", None) or {}),
        }


T = TypeVar("T")


class DetectorPool(_Named):
    """Several ``Detector``s of one model folder, each with its own session (on one GPU: its own CUDA
    streams and memory arena), used as one by several threads: each ``run`` takes a free session for a
    whole batch and gives it back, so a worker with as many inference threads runs that many batches
    at once. On the CPU that beats one session with as many threads (``session_layout``): a session's
    threads wait for each other at every operator, so whenever another thread of the worker takes a
    core from one of them, all of them wait; single-threaded sessions lose only the time taken."""

    def __init__(self, detectors: Sequence[Detector]):
        if not detectors:
            raise ValueError("a DetectorPool needs at least one Detector")
        self.detectors = list(detectors)
        self._free: queue.SimpleQueue[Detector] = queue.SimpleQueue()
        for det in self.detectors:
            self._free.put(det)

    @classmethod
    def from_folder(cls, path: str | os.PathLike, sessions: int = 1, **options) -> "DetectorPool":
        """``sessions`` Detectors of ``path`` (``options`` as for ``Detector.from_folder``)."""
        if sessions < 1:
            raise ValueError(f"sessions is {sessions}; a model needs at least 1 session")
        return cls([Detector.from_folder(path, **options) for _ in range(sessions)])

    @property
    def sessions(self) -> int:
        return len(self.detectors)

    @property
    def spec(self) -> ModelSpec:
        return self.detectors[0].spec

    @property
    def providers(self) -> list[str]:
        return self.detectors[0].providers

    @property
    def io_binding(self) -> bool:
        return self.detectors[0].io_binding

    @property
    def input_size(self) -> tuple[int, int]:
        return self.detectors[0].input_size

    def decode_jpeg(self, data: bytes) -> np.ndarray:
        return self.detectors[0].decode_jpeg(data)  # no session involved: any Detector's sizes do

    def warmup(self, batch: int = 1) -> None:
        """Warm every session (each has its own allocator and kernels to set up)."""
        for det in self.detectors:
            det.warmup(batch)

    def probe(self, batch: int = 2, runs: int = 3) -> dict[str, Any]:
        return self._on_free(lambda det: det.probe(batch, runs))

    def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedObject]]:
        """As ``Detector.detect``, on a free session."""
        if len(images) == 0:
            return []
        prepared = self.prepare(images)
        return self.decode(prepared, self.run(prepared))

    # Preparing and decoding involve no session: any Detector's adapter does (they are one model's).
    def prepare(self, images: Sequence[np.ndarray]) -> Prepared:
        return self.detectors[0].prepare(images)

    def run(self, prepared: Prepared) -> dict[str, np.ndarray]:
        """One run of a prepared batch on a free session (waits while every session is busy)."""
        return self._on_free(lambda det: det.run(prepared))

    def decode(self, prepared: Prepared, outputs: dict[str, np.ndarray]) -> list[list[DetectedObject]]:
        return self.detectors[0].decode(prepared, outputs)

    def infer(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``Detector.infer`` on a free session."""
        return self._on_free(lambda det: det.infer(names, feeds))

    def _on_free(self, fn: Callable[[Detector], T]) -> T:
        det = self._free.get()  # blocks while every session is busy
        try:
            return fn(det)
        finally:
            self._free.put(det)


def _synthetic_frame(width: int, height: int) -> np.ndarray:
    """A grey BGR scene with a darker floor, a light box and a dark disc: deterministic, cheap, and
    not blank, so normalisation and resizing see more than one value."""
    img = np.full((height, width, 3), 128, np.uint8)
    img[height * 2 // 3:] = (90, 90, 90)
    cv2.rectangle(img, (width // 8, height // 4), (width * 3 // 8, height * 3 // 4), (220, 220, 220), -1)
    cv2.circle(img, (width * 2 // 3, height // 2), max(1, min(width, height) // 6), (40, 60, 80), -1)
    return img

"""The detector's GPU path without a GPU: the CUDA and TensorRT provider options (plain dicts), the IO
binding decision, IO binding run on CPU memory against ``session.run`` on the real models, the
session pool, and the settings that configure them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from aimass import processes
from aimass.contracts import DetectedObject
from aimass.settings import DetectorSettings
from aimass_detector import model as M
from aimass_detector.adapters import adapter_for
from aimass_detector.engine import BoundRunner, Detector, DetectorPool, _synthetic_frame, binding_device, use_io_binding
from aimass_detector.model import GpuOptions, _provider_options
from aimass_detector import serving
from aimass_detector.serving import detector_loader, detector_options, prepare_threads, session_layout

MODELS = Path(__file__).resolve().parents[2] / "models"
CUDA, TRT, CPU = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"


# ---- provider options -----------------------------------------------------------------------------

def test_cuda_options_default_and_set():
    assert _provider_options(CUDA) == {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC",
                                       "do_copy_in_default_stream": True, "arena_extend_strategy": "kSameAsRequested"}
    opts = _provider_options(CUDA, GpuOptions(device_id=2, cudnn_conv_algo_search="EXHAUSTIVE", trt_fp16=True))
    assert (opts["device_id"], opts["cudnn_conv_algo_search"]) == (2, "EXHAUSTIVE")
    assert "trt_fp16_enable" not in opts  # a TensorRT option means nothing to CUDA


def test_tensorrt_options_cache_engines_and_take_fp16(tmp_path, monkeypatch):
    cache = tmp_path / "trt"
    monkeypatch.setenv("AIMASS_TRT_CACHE", str(cache))
    assert _provider_options(TRT) == {"device_id": 0, "trt_engine_cache_enable": True,
                                      "trt_engine_cache_path": str(cache), "trt_fp16_enable": False}
    assert cache.is_dir()  # TensorRT does not create it
    opts = _provider_options(TRT, GpuOptions(device_id=1, trt_fp16=True))
    assert (opts["device_id"], opts["trt_fp16_enable"]) == (1, True)


def test_cpu_options_stay_empty():
    assert _provider_options(CPU, GpuOptions(device_id=3, trt_fp16=True)) == {}


def test_gpu_options_refuse_what_onnx_runtime_would_reject():
    with pytest.raises(ValueError, match="cudnn_conv_algo_search 'FAST' is not one of HEURISTIC"):
        GpuOptions(cudnn_conv_algo_search="FAST")
    with pytest.raises(ValueError, match="device_id -1 is negative"):
        GpuOptions(device_id=-1)


def test_create_session_hands_each_provider_its_options(monkeypatch, tmp_path):
    # A build with TensorRT and CUDA, faked: the session records what it was asked for.
    import onnxruntime as ort

    asked = {}

    class FakeSession:
        def __init__(self, path, sess_options, providers):
            asked["providers"] = providers

        def get_providers(self):
            return [p for p, _ in asked["providers"]]

    monkeypatch.setenv("AIMASS_TRT_CACHE", str(tmp_path / "trt"))
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    spec = M.load_spec(MODELS / "nanodet-g-416")
    gpu = GpuOptions(device_id=1, cudnn_conv_algo_search="DEFAULT", trt_fp16=True)
    _, in_use = M.create_session(spec, providers=["tensorrt", "cuda"], gpu=gpu)
    assert in_use == [TRT, CUDA]
    (trt, trt_opts), (cuda, cuda_opts) = asked["providers"]
    assert (trt, trt_opts["trt_fp16_enable"], trt_opts["device_id"]) == (TRT, True, 1)
    assert (cuda, cuda_opts["cudnn_conv_algo_search"], cuda_opts["device_id"]) == (CUDA, "DEFAULT", 1)


# ---- the IO binding decision ----------------------------------------------------------------------

@pytest.mark.parametrize("mode, expected", [
    ("auto", False),  # session.run on every provider: IO binding was slower on an H100 with CUDA (docs/gpu.md)
    ("on", True),
    ("off", False),
])
def test_io_binding_only_when_asked_for(mode, expected):
    assert use_io_binding(mode) is expected


def test_io_binding_mode_must_be_known():
    with pytest.raises(ValueError, match="io_binding 'yes' is not one of auto, on, off"):
        use_io_binding("yes")
    with pytest.raises(ValueError, match="io_binding 'yes'"):
        Detector.from_folder(MODELS / "nanodet-g-416", io_binding="yes")


def test_binding_device_follows_the_first_provider():
    assert [binding_device(p) for p in ([TRT, CUDA], [CUDA], [CPU], [])] == ["cuda", "cuda", "cpu", "cpu"]


# ---- IO binding on CPU against session.run, on the real models ------------------------------------

ASSETS = Path(__file__).resolve().parents[2] / "services" / "gateway" / "assets"


def _scene(background: str, cutouts: list[tuple[str, int, int, float]]) -> np.ndarray:
    """The gateway's photographed cut-outs (name, left, top, scale) pasted over one of its backgrounds:
    real people and a real vehicle, so both models find something."""
    img = cv2.imread(str(ASSETS / background))
    for name, x, y, scale in cutouts:
        rgba = cv2.imread(str(ASSETS / name), cv2.IMREAD_UNCHANGED)
        rgba = cv2.resize(rgba, None, fx=scale, fy=scale)
        h, w = rgba.shape[:2]
        alpha = rgba[:, :, 3:] / 255.0
        roi = img[y:y + h, x:x + w]
        roi[:] = (roi * (1 - alpha) + rgba[:, :, :3] * alpha).astype(np.uint8)
    return img


def _frames(w: int, h: int) -> list[np.ndarray]:
    return [_scene("street.jpg", [("person_1.png", 100, 200, 2.0), ("person_2.png", 400, 150, 2.0)]),
            _synthetic_frame(w, h),
            _scene("yard.jpg", [("person_2.png", 250, 100, 2.2)]),
            _scene("street.jpg", [("vehicle_1.png", 100, 250, 1.0)])]


def _pair(folder: Path) -> tuple[Detector, Detector]:
    """A plain and an IO-bound Detector on one CPU session (each with its own adapter and buffer)."""
    plain = Detector.from_folder(folder, providers=["cpu"], threads=1, io_binding="off")
    bound = Detector(plain.spec, plain.session, adapter_for(plain.spec), plain.providers, io_binding="on")
    assert (plain.io_binding, bound.io_binding) == (False, True)
    return plain, bound


@pytest.mark.parametrize("folder", ["nanodet-g-416", "pedssd"])
def test_io_binding_on_cpu_detects_what_session_run_detects(folder):
    if not (MODELS / folder / "model.yaml").is_file():
        pytest.skip(f"no model folder models/{folder}")
    plain, bound = _pair(MODELS / folder)
    assert bound._bound.device == "cpu"
    frames = _frames(*plain.input_size)
    names = plain.adapter.output_names
    raw_plain = plain.session.run(names, plain.adapter.prepare(frames))
    raw_bound = bound._bound.run(names, bound.adapter.prepare(frames))
    for a, b in zip(raw_plain, raw_bound, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    expected = plain.detect(frames)
    assert sum(len(objs) for objs in expected) >= 3  # people (and a vehicle) found: something to compare
    assert bound.detect(frames) == expected
    assert bound.detect(frames[:2]) == expected[:2]  # another batch size: a new input buffer
    assert bound.detect(frames[2:]) == expected[2:]  # and back


def test_bound_runner_reuses_its_input_while_the_shape_holds():
    det = Detector.from_folder(MODELS / "nanodet-g-416", providers=["cpu"], threads=1, io_binding="on")
    runner: BoundRunner = det._bound
    w, h = det.input_size
    frames = [_synthetic_frame(w, h)] * 2
    det.detect(frames)
    (key, first), = runner._inputs.values()
    assert key[0] == (2, 3, h, w) and first.device_name() == "cpu"
    det.detect(frames[::-1])
    assert next(iter(runner._inputs.values()))[1] is first  # same shape: updated in place
    det.detect(frames[:1])
    assert next(iter(runner._inputs.values()))[1] is not first


def test_probe_reports_io_binding():
    det = Detector.from_folder(MODELS / "nanodet-g-416", providers=["cpu"], threads=1, io_binding="on")
    facts = det.probe(batch=1, runs=1)
    assert facts["io_binding"] is True and facts["providers"] == [CPU]


# ---- the session pool -----------------------------------------------------------------------------

class Marker:
    """A stand-in Detector: each frame's object carries the frame's value; ``calls`` records the parts it ran."""

    def __init__(self, name: str, fail_on: int | None = None):
        self.name, self.fail_on, self.calls = name, fail_on, []

    def prepare(self, images):
        return [int(img[0, 0, 0]) for img in images]

    def run(self, values):
        self.calls.append(len(values))
        if self.fail_on is not None and self.fail_on in values:
            raise RuntimeError(f"session {self.name} failed")
        return values

    def decode(self, values, outputs):
        return [[DetectedObject("person", v, 0.5, 0.0, 0.0, 1.0, 1.0)] for v in outputs]


def _img(v: int) -> np.ndarray:
    return np.full((2, 2, 3), v, np.uint8)


def test_pool_runs_whole_batches_on_free_sessions_at_once():
    both_running = threading.Barrier(2, timeout=10)

    class Held(Marker):
        def run(self, values):
            both_running.wait()  # raises BrokenBarrierError unless the two batches run at once
            return super().run(values)
    sessions = [Held("a"), Held("b")]
    pool = DetectorPool(sessions)
    with ThreadPoolExecutor(2) as threads:
        futures = [threads.submit(pool.detect, [_img(v) for v in vs]) for vs in ((0, 1, 2), (3, 4))]
        out = [f.result(10) for f in futures]
    assert [[objs[0].class_id for objs in o] for o in out] == [[0, 1, 2], [3, 4]]
    assert sorted(n for s in sessions for n in s.calls) == [2, 3] and all(s.calls for s in sessions)
    assert pool.detect([]) == []


def test_pool_failure_raises_and_frees_the_session():
    pool = DetectorPool([Marker("a", fail_on=3)])
    with pytest.raises(RuntimeError, match="session a failed"):
        pool.detect([_img(v) for v in range(4)])
    assert pool._free.qsize() == 1  # back: the next batch does not block
    assert [o[0].class_id for o in pool.detect([_img(0), _img(1)])] == [0, 1]


def test_pool_refuses_no_sessions():
    with pytest.raises(ValueError, match="at least one"):
        DetectorPool([])
    with pytest.raises(ValueError, match="sessions is 0"):
        DetectorPool.from_folder(MODELS / "nanodet-g-416", sessions=0)


# ---- settings -> what the worker loads ------------------------------------------------------------

def test_settings_reach_the_sessions(monkeypatch):
    monkeypatch.setenv("AIMASS_DETECTOR_IO_BINDING", "on")
    monkeypatch.setenv("AIMASS_DETECTOR_SESSIONS", "2")
    monkeypatch.setenv("AIMASS_DETECTOR_DEVICE_ID", "1")
    monkeypatch.setenv("AIMASS_DETECTOR_TRT_FP16", "true")
    monkeypatch.setenv("AIMASS_PROVIDERS", "cpu")
    monkeypatch.setenv("AIMASS_THREADS", "1")
    monkeypatch.setenv("AIMASS_DETECTOR_SPINNING", "true")
    settings = DetectorSettings()
    opts = detector_options(settings)
    assert opts == {"providers": ["cpu"], "threads": 1, "io_binding": "on", "spinning": True,
                    "gpu": GpuOptions(device_id=1, cudnn_conv_algo_search="HEURISTIC", trt_fp16=True)}
    pool = detector_loader(settings)(MODELS / "nanodet-g-416")
    assert pool.sessions == 2 and pool.io_binding and pool.providers == [CPU]
    assert len({id(d.session) for d in pool.detectors}) == 2  # a session each
    assert {_spinning(d.session) for d in pool.detectors} == {"1"}
    pool.warmup()
    frames = _frames(*pool.input_size)
    single = Detector.from_folder(MODELS / "nanodet-g-416", providers=["cpu"], threads=1)
    assert pool.detect(frames) == single.detect(frames)


def _spinning(session) -> str:
    return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")


def test_session_layout_auto_gives_each_core_a_single_threaded_session(monkeypatch):
    def layout(cores: int, **over):
        monkeypatch.setattr(serving, "usable_cores", lambda: cores)
        return session_layout(DetectorSettings(**over))
    assert layout(2) == (2, 1) and layout(1) == (1, 1) and layout(4) == (4, 1)
    assert layout(16) == (serving.MAX_AUTO_SESSIONS, 4)  # at most 4 batches in flight; threads shared out
    assert layout(8, detector_sessions=2) == (2, 4) and layout(8, threads=3) == (4, 3)
    assert layout(2, detector_sessions=1, threads=2) == (1, 2)  # as set
    monkeypatch.setattr(serving, "choose_providers", lambda requested: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert layout(16) == (1, None)  # a GPU: one session, ONNX Runtime's threads


def test_prepare_threads_auto_one_on_the_cpu_more_on_a_gpu(monkeypatch):
    def threads(cores: int, **over):
        monkeypatch.setattr(serving, "usable_cores", lambda: cores)
        return prepare_threads(DetectorSettings(**over))
    assert threads(2) == 1 and threads(16) == 1  # the CPU: the sessions have the cores
    assert threads(16, detector_prepare_threads=3) == 3  # as set
    monkeypatch.setattr(serving, "choose_providers", lambda requested: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert threads(16) == serving.MAX_AUTO_PREPARE and threads(6) == 3 and threads(1) == 1  # half the cores
    assert threads(16, detector_prepare_threads=1) == 1


def test_usable_cores_follow_the_cgroup_cpu_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: set(range(32)))
    assert processes.usable_cores(tmp_path) == 32  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert processes.usable_cores(tmp_path) == 32  # v2, unlimited
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert processes.usable_cores(tmp_path) == 3  # v2: 2.5 CPUs -> 3 cores used part of the time
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert processes.usable_cores(tmp_path) == 32  # v1, unlimited
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    assert processes.usable_cores(tmp_path) == 4
    monkeypatch.setattr(serving, "usable_cores", lambda: 4)
    assert session_layout(DetectorSettings()) == (4, 1)  # a pod limited to 4 CPUs: 4 single-threaded sessions


def test_detector_defaults_keep_the_cpu_path():
    settings = DetectorSettings()
    assert (settings.detector_io_binding, settings.detector_sessions, settings.detector_device_id,
            settings.detector_cudnn_conv_algo_search, settings.detector_trt_fp16) == ("auto", 0, 0, "HEURISTIC", False)
    det = Detector.from_folder(MODELS / "nanodet-g-416", providers=["cpu"], threads=1)
    assert det.io_binding is False
    # The worker's threads do not spin (they share the cores with its prepare thread); bare sessions
    # keep ONNX Runtime's default.
    assert _spinning(detector_loader(settings)(MODELS / "nanodet-g-416").detectors[0].session) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        _spinning(det.session)  # nothing set: ONNX Runtime's default


def test_sessions_setting_is_bounded(monkeypatch):
    for bad in ("-1", "17"):
        monkeypatch.setenv("AIMASS_DETECTOR_SESSIONS", bad)
        with pytest.raises(ValueError, match="detector_sessions"):
            DetectorSettings()

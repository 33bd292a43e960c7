"""A stand-in for a model that costs nearly nothing to run: its ONNX graph answers every frame of a
batch with the outputs the real model gave for one frame (constants tiled to the batch), so the
adapter decodes the same objects and the worker does all its usual work around the run. A detector
worker draining frames through it shows its own ceiling, what it can feed any model at most, and
its CPU a frame around the model: on a CPU-only host, what bounds it on a fast GPU.

The graph reads only its input's shape (the batch size); the batch axis is the first of the input and
of every output, as for every adapter here. Built with the ``onnx`` package (in requirements.lock)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

OPSET = 13  # Shape, Slice, Concat and Tile as used here


@dataclass
class FreeModel:
    folder: Path  # model.yaml and model.onnx, for AIMASS_MODEL_DIR
    objects: int  # the objects it finds in every frame


def build(model_dir: Path, folder: Path, jpegs: Sequence[bytes]) -> FreeModel:
    """Write ``folder/model.yaml`` and ``model.onnx``: ``model_dir``'s model as a free one (named
    ``<name>-free``), answering every frame as the real model answered the one of ``jpegs`` in which
    it finds the most objects."""
    import onnx
    from onnx import helper, numpy_helper

    from aimass_detector.engine import Detector

    real = Detector.from_folder(model_dir, providers=["CPUExecutionProvider"])
    images = [real.decode_jpeg(j) for j in jpegs]
    found = [len(real.detect([img])[0]) for img in images]
    objects = max(found)
    graph = onnx.load(real.spec.onnx_path, load_external_data=False).graph
    names = [o.name for o in graph.output]
    prepared = real.prepare([images[found.index(objects)]])
    outputs = real.infer(names, prepared.feeds)
    prepared.release()

    first = graph.input[0].name
    nodes = [helper.make_node("Shape", [first], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "one"], ["batch"])]
    consts = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
              numpy_helper.from_array(np.array([1], np.int64), "one")]
    results = []
    for i, (name, value) in enumerate(zip(names, outputs)):
        # Tile (1, ...) to (batch, ...): repeats are the batch and a 1 for each other axis.
        consts += [numpy_helper.from_array(np.ascontiguousarray(value[:1]), f"value_{i}"),
                   numpy_helper.from_array(np.ones(value.ndim - 1, np.int64), f"ones_{i}")]
        nodes += [helper.make_node("Concat", ["batch", f"ones_{i}"], [f"repeats_{i}"], axis=0),
                  helper.make_node("Tile", [f"value_{i}", f"repeats_{i}"], [name])]
        dims = ["N", *value.shape[1:]]
        results.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), dims))
    model = helper.make_model(helper.make_graph(nodes, "free", list(graph.input), results, consts),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(onnx.IR_VERSION, 8)  # 8: what ONNX Runtime releases from 1.10 read
    onnx.checker.check_model(model)

    folder.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    spec = yaml.safe_load((Path(model_dir) / "model.yaml").read_text())
    spec.update(name=f"{spec['name']}-free", file="model.onnx", sha256=hashlib.sha256(data).hexdigest())
    (folder / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return FreeModel(folder, objects)

"""Model output formats: ``format`` in model.yaml -> the adapter class that prepares inputs for and
decodes outputs of that family: ``nanodet``, ``tf_ssd``, ``yolov8`` (YOLOv8/YOLO11), ``rtdetr``. A new
export style is one new module here and one entry in ``ADAPTERS``."""

from __future__ import annotations

from aimass_detector.adapters.base import Adapter
from aimass_detector.adapters.nanodet import NanoDetAdapter
from aimass_detector.adapters.rtdetr import RtDetrAdapter
from aimass_detector.adapters.tf_ssd import TfSsdAdapter
from aimass_detector.adapters.yolo import YoloV8Adapter
from aimass_detector.model import ModelError, ModelSpec

ADAPTERS: dict[str, type[Adapter]] = {
    cls.format: cls for cls in (NanoDetAdapter, TfSsdAdapter, YoloV8Adapter, RtDetrAdapter)}


def adapter_for(spec: ModelSpec) -> Adapter:
    try:
        cls = ADAPTERS[spec.format]
    except KeyError:
        raise ModelError(f"model folder {spec.folder}: format '{spec.format}' has no adapter (known: "
                         f"{', '.join(sorted(ADAPTERS))}). Fix 'format' in model.yaml, or add an adapter "
                         "in services/detector/adapters/.") from None
    return cls(spec)


__all__ = ["ADAPTERS", "Adapter", "adapter_for", "NanoDetAdapter", "RtDetrAdapter", "TfSsdAdapter", "YoloV8Adapter"]

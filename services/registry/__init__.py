"""The model registry: pushed ONNX models (validated, content-addressed in the model store), which
version serves which cameras (promote, canary, shadow, rollback on the models control topic), and how
each version does in service (ClickHouse: latency, detections per class, drift alerts). One CLI
(`aimass models ...`) and one HTTP API over the same operations (service.Registry)."""

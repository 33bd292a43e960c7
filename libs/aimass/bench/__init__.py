"""`aimass bench`: how much the stream around the model costs, measured as ratios in one run.

Each section starts the workers it measures as real processes on the local stack (their own topics and
database), feeds them a prepared workload, and reads their throughput from their Prometheus counters;
the baseline (bare ONNX Runtime, a raw aiokafka consumer, raw clickhouse-driver inserts) runs on the
same input in the same run, so the ratio survives a noisy machine better than either figure.

    workload.py  what is fed: demo-scene JPEGs, detection messages, paced camera streams
    probe.py     what is read: counter rates, percentiles, process memory, GPU utilisation
    fleet.py     the stack, a namespace per section, worker processes
    detector.py  rules.py  sink.py  latency.py  scaling.py   one section each
    report.py    the table, bench.json and bench.png
    run.py       the sections in order, within a time budget
"""

"""The sink writes a batch's frame rows after its other tables' rows, so a frame that can be queried
has its detections in (tests and analysts wait for frames, then read detections)."""

import asyncio

from aiokafka.structs import ConsumerRecord, TopicPartition

from aimass import contracts
from aimass.bench import workload
from aimass.settings import SinkSettings
from aimass_sink import worker


class _Writer:
    """Records when each table's insert starts and ends; the detections insert is the slow one."""
    events: list[tuple[str, str]] = []

    def __init__(self, url, table, **kw):
        self.table, self.rows, self.batches, self.failures = table, 0, 0, 0

    async def write(self, rows) -> None:
        self.events.append(("start", self.table))
        await asyncio.sleep(0.05 if self.table == "detections" else 0)  # its insert's duration, not a wait
        self.rows += len(rows)
        self.events.append(("done", self.table))


def test_a_batch_s_frames_are_written_after_its_detections(monkeypatch, tmp_path):
    monkeypatch.setattr(worker, "TableWriter", _Writer)
    _Writer.events = []
    settings = SinkSettings(state_dir=tmp_path, kafka_bootstrap="127.0.0.1:9")  # never connects
    app = worker.build_app(settings)
    topic = settings.topic(contracts.TOPIC_DETECTIONS)
    records = [ConsumerRecord(topic, 0, i, 0, 0, key, value, None, len(key), len(value), [])
               for i, (key, value) in enumerate(workload.detection_messages(["cam-1"], 5, objects=2))]

    async def run() -> None:
        rest = await app.aimass_consumer.handle({TopicPartition(topic, 0): records})
        await rest
    asyncio.run(run())
    events = _Writer.events
    assert events.index(("start", "frames")) > events.index(("done", "detections")), events
    assert app.aimass_writers["frames"].rows == 5 and app.aimass_writers["detections"].rows == 10

"""The Faust app every worker builds (aimass.kafka.make_app), and how workers send through its producer."""

from __future__ import annotations

import asyncio

from faust.sensors.otel import OpenTelemetryMonitor

from aimass.contracts import ContractError
from aimass.kafka import DeadLetterSender, OutputTopic, make_app
from aimass.settings import Settings


def test_faust_stream_metrics_are_opt_in_and_offsets_are_tracked_either_way(tmp_path):
    plain = make_app("t1", Settings(state_dir=tmp_path))
    assert not isinstance(plain.monitor, OpenTelemetryMonitor)
    assert plain.monitor.tp_committed_offsets == {} and plain.monitor.tp_end_offsets == {}  # aimass_consumer_lag
    full = make_app("t2", Settings(state_dir=tmp_path, faust_stream_metrics=True))
    assert isinstance(full.monitor, OpenTelemetryMonitor)


class _Producer:
    """Faust's producer as OutputTopic uses it: started or not, and what it was handed."""

    def __init__(self, started: bool, fail: Exception | None = None):
        self.started, self.fail, self.sent = started, fail, []

    async def send(self, topic, key, value, partition, timestamp, headers):
        if self.fail:
            raise self.fail
        self.sent.append((topic, key, value, partition, timestamp, headers))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(len(self.sent) - 1)  # stands in for the record's metadata
        return fut


class _App:
    def __init__(self, producer: _Producer):
        self.producer, self.starts = producer, 0

    async def maybe_start_producer(self):
        self.starts += 1
        self.producer.started = True
        return self.producer


def test_an_output_topic_hands_messages_to_the_producer_in_order_and_returns_their_deliveries():
    async def main():
        app = _App(_Producer(started=False))
        out = OutputTopic(app, "t.violations")
        first = await out.send(b"site-1", b"one", headers={"traceparent": b"00-ab"})
        second = await out.send(b"site-1", b"two", partition=3)
        assert app.starts == 1  # only the first send, before the worker had started its producer
        assert app.producer.sent == [("t.violations", b"site-1", b"one", None, None, {"traceparent": b"00-ab"}),
                                     ("t.violations", b"site-1", b"two", 3, None, None)]
        assert (await first, await second) == (0, 1)

    asyncio.run(main())


def test_a_dead_letter_that_cannot_be_sent_is_logged_and_the_worker_goes_on(caplog):
    from faust.exceptions import ProducerSendError

    async def main():
        app = _App(_Producer(started=True, fail=ProducerSendError("Error while sending: KafkaTimeoutError()")))
        dead = DeadLetterSender(OutputTopic(app, "t.deadletter"), "rules")
        await dead.send(source_topic="t.detections", original=b"\xff", key=b"cam-1",
                        error=ContractError("bad_encoding", "not MessagePack"), partition=2, offset=7)
        assert dead.count == 1

    asyncio.run(main())
    assert "could not send a dead letter (bad_encoding) to t.deadletter" in caplog.text

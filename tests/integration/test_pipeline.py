"""The workers on the real broker and ClickHouse: messages produced are consumed, processed and
inserted; bad input becomes dead letters; a restarted worker resumes from its committed offset."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from aimass import contracts
from aimass.clickhouse.client import query_rows
from aimass.settings import GatewaySettings
from aimass_gateway.producer import GatewayProducer
from conftest import read_topic, wait_until

pytestmark = pytest.mark.integration


def _count(client, sql: str) -> int:
    return query_rows(client, sql)[1][0][0]


def _image(i: int) -> np.ndarray:
    img = np.full((240, 320, 3), 40 + i, np.uint8)
    img[60:180, 100 + i: 140 + i] = 200
    return img


async def _send_frames(ns, camera: str, seqs, *, readings: int = 0, extra_raw: list[tuple[str, bytes, bytes]] = ()):
    gw = GatewayProducer(ns.settings(GatewaySettings), "test-site")
    async with gw:
        for s in seqs:
            await gw.send_frame(camera, s, contracts.now_ms(), _image(s))
        for s in range(readings):
            await gw.send_reading("temp-1", s, contracts.now_ms(), 20.0 + s, "C")
        for topic, key, value, *headers in extra_raw:  # (topic, key, value[, headers])
            await gw.send_raw(ns.topic_prefix + topic, key, value, *headers)
    assert gw.counters.send_errors == 0
    return gw


def _traceparents(ns, topic: str, cls) -> dict[tuple[str, int], bytes]:
    """(camera, seq) -> the traceparent header of each readable ``cls`` message on ``topic``."""
    out = {}
    for r in asyncio.run(read_topic(ns, topic, timeout_s=10)):
        try:
            m = contracts.decode(r.value, cls)
        except contracts.ContractError:
            continue
        out[(m.camera_id, m.seq)] = dict(r.headers or ()).get("traceparent")
    return out


def test_frames_readings_and_bad_input_reach_clickhouse(ns, ns_ch, workers):
    workers.start("detector", "sink")
    corrupt_jpeg = contracts.encode(contracts.Frame(site_id="test-site", camera_id="cam-x", seq=1,
                                                    captured_ms=contracts.now_ms(), width=320, height=240,
                                                    jpeg=b"\xff\xd8\xff\xe0 not really a jpeg"))
    asyncio.run(_send_frames(ns, "cam-1", range(12), readings=5, extra_raw=[
        (contracts.TOPIC_FRAMES, b"cam-x", b"\xc1garbage"),          # not a Frame
        (contracts.TOPIC_FRAMES, b"cam-x", corrupt_jpeg),            # a Frame whose JPEG is corrupt
        (contracts.TOPIC_SENSORS, b"temp-1", b""),                   # empty
        (contracts.TOPIC_SENSORS, b"temp-1", contracts.encode(contracts.SensorReading(
            site_id="test-site", sensor_id="temp-1", seq=99, captured_ms=contracts.now_ms(), value=float("nan")))),
        (contracts.TOPIC_FRAMES, b"cam-x", contracts.encode(contracts.Frame(   # a gateway without a clock
            site_id="test-site", camera_id="cam-x", seq=2, captured_ms=0.0, width=320, height=240, jpeg=b"\xff\xd8"))),
    ]))

    wait_until(lambda: _count(ns_ch, "SELECT count() FROM frames FINAL") >= 12, 60, "12 frames in ClickHouse")
    wait_until(lambda: _count(ns_ch, "SELECT count() FROM sensor_readings FINAL") >= 5, 30, "5 readings")
    wait_until(lambda: _count(ns_ch, "SELECT count() FROM deadletters") >= 5, 30, "5 dead letters")

    cols, rows = query_rows(ns_ch, "SELECT camera_id, count(), min(seq), max(seq), any(model_name), "
                                   "min(detector_in_ms - sent_ms) >= 0, min(sink_in_ms - detector_out_ms) >= 0 "
                                   "FROM frames FINAL GROUP BY camera_id")
    assert rows == [("cam-1", 12, 0, 11, "nanodet-g-416", 1, 1)], workers.logs()
    _, rows = query_rows(ns_ch, "SELECT source_topic, reason, service FROM deadletters ORDER BY reason")
    assert sorted(r[1] for r in rows) == ["bad_encoding", "bad_jpeg", "bad_time", "bad_value", "empty"]
    assert {r[0] for r in rows} == {ns.topic_prefix + contracts.TOPIC_FRAMES, ns.topic_prefix + contracts.TOPIC_SENSORS}
    _, rows = query_rows(ns_ch, "SELECT sensor_id, count(), max(value) FROM sensor_readings FINAL GROUP BY sensor_id")
    assert rows == [("temp-1", 5, 24.0)]
    # With no exporter, the detector makes no spans of its own: each frame's trace context travels on
    # as the gateway sent it (a later stage that exports parents its spans on the gateway's).
    sent = _traceparents(ns, contracts.TOPIC_FRAMES, contracts.Frame)
    out = _traceparents(ns, contracts.TOPIC_DETECTIONS, contracts.Detections)
    assert set(out) == {("cam-1", s) for s in range(12)} and all(sent[k].startswith(b"00-") for k in out)
    assert out == {k: sent[k] for k in out}


@pytest.mark.worker_env(AIMASS_DETECTOR_PREPARE_THREADS="3", AIMASS_MAX_BATCH="2")
def test_detector_with_several_prepare_threads_keeps_each_cameras_order(ns, ns_ch, workers):
    # A backlog in batches of two, three prepared at once: batches may finish their CPU work out of
    # order, and must still be delivered (and tracked) in order.
    workers.start("detector", "sink")
    for cam in ("cam-1", "cam-2"):
        asyncio.run(_send_frames(ns, cam, range(20)))
    wait_until(lambda: _count(ns_ch, "SELECT count() FROM frames FINAL") >= 40, 90, "40 frames in ClickHouse")
    for cam in ("cam-1", "cam-2"):
        _, rows = query_rows(ns_ch, f"SELECT seq, detector_out_ms FROM frames FINAL WHERE camera_id = '{cam}' ORDER BY seq")
        assert [r[0] for r in rows] == list(range(20))
        out = [r[1] for r in rows]
        assert out == sorted(out), (cam, out)
    assert "3 prepare thread(s)" in workers.logs("detector")


async def _committed(ns, group: str, logical_topic: str, partitions: int) -> int:
    c = AIOKafkaConsumer(bootstrap_servers=ns.env["AIMASS_KAFKA_BOOTSTRAP"], group_id=group,
                         enable_auto_commit=False)
    await c.start()
    try:
        total = 0
        for p in range(partitions):
            off = await c.committed(TopicPartition(ns.topic_prefix + logical_topic, p))
            total += off or 0
        return total
    finally:
        await c.stop()


def test_restarted_workers_resume_from_committed_offsets(ns, ns_ch, workers):
    settings = ns.settings()
    workers.start("detector", "sink")
    asyncio.run(_send_frames(ns, "cam-1", range(10)))
    wait_until(lambda: _count(ns_ch, "SELECT count() FROM frames FINAL") == 10, 60, "first 10 frames")
    workers.stop()  # SIGTERM: Faust commits what it acknowledged

    group = ns.topic_prefix + "aimass-detector"
    committed = asyncio.run(_committed(ns, group, contracts.TOPIC_FRAMES, settings.partitions_frames))
    assert committed == 10, "the detector's committed offsets should cover the 10 frames it processed"

    asyncio.run(_send_frames(ns, "cam-1", range(10, 20)))
    workers.start("detector", "sink")
    wait_until(lambda: _count(ns_ch, "SELECT count() FROM frames FINAL") == 20, 60, "all 20 frames")
    # Without FINAL: had the restarted workers replayed from the start, the first 10 frames would
    # have been inserted twice (before a background merge could fold them).
    assert _count(ns_ch, "SELECT count() FROM frames") == 20
    _, rows = query_rows(ns_ch, "SELECT min(seq), max(seq), uniqExact(seq) FROM frames FINAL")
    assert rows == [(0, 19, 20)]


E2E_SITE = str(__import__("pathlib").Path(__file__).parents[1] / "e2e" / "site.yaml")


@pytest.mark.worker_env(AIMASS_SITE_FILE=E2E_SITE)
def test_rules_worker_turns_detections_into_one_incident(ns, ns_ch, workers):
    """Detections sent straight to the topic (no detector): a person inside cam-in's zone for 10
    frames, then absent for 6, is one incident with a start and an end; an unknown camera is a
    dead letter."""
    workers.start("rules", "sink")
    t0 = contracts.now_ms()

    def det(seq: int, inside: bool, camera: str = "cam-in") -> bytes:
        objects = [contracts.DetectedObject("person", 0, 0.9, 0.7, 0.5, 0.8, 0.9)] if inside else []
        return contracts.encode(contracts.Detections(
            site_id="e2e-site", camera_id=camera, seq=seq, captured_ms=t0 + seq * 200, width=512, height=384,
            model_name="m", model_version="1", objects=objects, stamps={"captured": t0 + seq * 200}))

    def traceparent(seq: int) -> bytes:  # each frame its own trace, as the gateway would have started
        return f"00-{seq + 1:032x}-{seq + 1:016x}-01".encode()

    raw = [(contracts.TOPIC_DETECTIONS, b"cam-in", det(s, s < 10), [("traceparent", traceparent(s))])
           for s in range(16)]
    raw.append((contracts.TOPIC_DETECTIONS, b"cam-nowhere", det(0, True, "cam-nowhere")))
    asyncio.run(_send_frames(ns, "cam-in", [], extra_raw=raw))

    wait_until(lambda: _count(ns_ch, "SELECT count() FROM violations FINAL") >= 2, 60, "start and end events")
    _, rows = query_rows(ns_ch, "SELECT event, rule_id, camera_id, zone_id, source_seq, uniqExact(violation_id) "
                                "FROM violations FINAL GROUP BY event, rule_id, camera_id, zone_id, source_seq ORDER BY event")
    assert [r[:4] for r in rows] == [("start", "intrusion-cam-in", "cam-in", "restricted"),
                                     ("end", "intrusion-cam-in", "cam-in", "restricted")]
    assert rows[0][4] == 2  # min_frames = 3: the third frame in the zone starts it
    assert _count(ns_ch, "SELECT uniqExact(violation_id) FROM violations FINAL") == 1
    wait_until(lambda: _count(ns_ch, "SELECT count() FROM deadletters WHERE reason = 'unknown_source'") == 1, 30,
               "the unknown camera's dead letter")
    # With no exporter the worker makes no spans: each violation carries on the trace of the frame that
    # raised it, as that frame's message came.
    events = {}
    for r in asyncio.run(read_topic(ns, contracts.TOPIC_VIOLATIONS, timeout_s=10)):
        v = contracts.decode(r.value, contracts.Violation)
        events[v.event] = (v.source_seq, dict(r.headers or ()).get("traceparent"))
    assert events == {"start": (2, traceparent(2)), "end": (events["end"][0], traceparent(events["end"][0]))}
    assert events["end"][0] >= 10


@pytest.mark.worker_env(AIMASS_SITE_FILE=E2E_SITE)
def test_rules_apply_switches_running_workers_and_bad_files_are_refused(ns, ns_ch, workers, tmp_path):
    """A running rules worker switches to an applied site file (here: cam-in's rule needs 12 frames,
    not 3); a bad file published behind the CLI's back is dead-lettered and changes nothing."""
    from aimass.site import SiteFileError
    from aimass_rules import control
    workers.start("rules", "sink")
    settings = ns.settings()
    changed = tmp_path / "site.yaml"
    changed.write_text(__import__("pathlib").Path(E2E_SITE).read_text().replace(
        "min_score: 0.4, min_frames: 3, clear_frames: 5, cooldown_s: 60, severity: high}",
        "min_score: 0.4, min_frames: 12, clear_frames: 5, cooldown_s: 60, severity: high}", 1))
    asyncio.run(control.publish(settings, changed))
    bad = contracts.encode(control.site_config(__import__("aimass.site").site.load_site(E2E_SITE),
                                               "site: {id: e2e-site}\nrules: [{id: x, type: nope}]", "bad.yaml"))
    asyncio.run(_send_frames(ns, "cam-in", [], extra_raw=[(contracts.TOPIC_CONTROL_RULES, b"e2e-site", bad)]))
    with pytest.raises(SiteFileError):  # the CLI path validates before publishing
        asyncio.run(control.publish(settings, tmp_path / "missing.yaml"))
    wait_until(lambda: "rules switched" in workers.logs("rules") and "refused a site file" in workers.logs("rules"),
               30, "the rules worker to take the change and refuse the bad file")

    t0 = contracts.now_ms()

    def det(seq: int, inside: bool) -> bytes:
        objects = [contracts.DetectedObject("person", 0, 0.9, 0.7, 0.5, 0.8, 0.9)] if inside else []
        return contracts.encode(contracts.Detections(
            site_id="e2e-site", camera_id="cam-in", seq=seq, captured_ms=t0 + seq * 200, width=512, height=384,
            model_name="m", model_version="1", objects=objects))

    # 8 frames inside: enough under the old rule (3), not under the applied one (12); then 14 more.
    asyncio.run(_send_frames(ns, "cam-in", [], extra_raw=[(contracts.TOPIC_DETECTIONS, b"cam-in", det(s, True))
                                                          for s in range(22)]))
    wait_until(lambda: _count(ns_ch, "SELECT count() FROM violations FINAL") >= 1, 60, "the intrusion")
    _, rows = query_rows(ns_ch, "SELECT event, source_seq FROM violations FINAL WHERE rule_id = 'intrusion-cam-in'")
    assert rows == [("start", 11)]  # the 12th frame in the zone, as the applied file says
    wait_until(lambda: _count(ns_ch, "SELECT count() FROM deadletters WHERE reason = 'bad_site'") == 1, 30,
               "the refused site file's dead letter")


def _children(parent: int) -> dict[int, str]:
    """A supervisor's children: pid -> the worker it runs."""
    import subprocess

    pids = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    out = {}
    for pid in map(int, pids):
        try:
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[4].decode()  # python -m aimass.cli run NAME
        except (OSError, IndexError):
            pass  # gone meanwhile
    return out


def test_run_all_supervises_the_workers_restarts_one_that_dies_and_stops_them_all(ns, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from aimass.processes import pid_alive

    def children() -> dict[int, str]:
        return _children(proc.pid)

    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "aimass.cli", "run", "all"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **ns.env, "AIMASS_READY_DIR": str(ready),
                                                            "AIMASS_SINK_PROCESSES": "2"})
    try:
        wait_until(lambda: all((ready / n).exists() for n in ("detector", "rules", "sink")), 120,
                   "the workers to be ready")
        # The sink's marker stands for both of its processes: each had partitions of the one group.
        assert len(list(ready.glob(".processes/*/sink"))) == 2
        first = children()
        assert sorted(first.values()) == ["detector", "rules", "sink", "sink"]
        victim = next(pid for pid, name in first.items() if name == "sink")
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(now := children()) == 4 and victim not in now, 30, "the killed sink to be replaced")
        assert sorted(children().values()) == ["detector", "rules", "sink", "sink"]
        last = children()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not any(pid_alive(c) for c in [*first, *last]), "a worker outlived `aimass run all`"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_supervisor_killed_outright_takes_its_workers_with_it(ns, tmp_path):
    """`aimass run rules --processes 2` SIGKILLed (as the OOM killer would): its two rules processes get
    SIGTERM from the kernel and stop, instead of running on unsupervised."""
    import os
    import signal
    import subprocess
    import sys

    from aimass.processes import pid_alive  # an orphan's zombie, until its new parent reaps it, counts as gone

    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "aimass.cli", "run", "rules", "--processes", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **ns.env, "AIMASS_READY_DIR": str(ready)})
    children: list[int] = []
    try:
        wait_until(lambda: (ready / "rules").exists(), 120, "both rules processes to be ready")
        children = list(_children(proc.pid))
        assert len(children) == 2
        proc.kill()
        proc.wait()
        wait_until(lambda: not any(pid_alive(c) for c in children), 60, "the orphaned rules processes to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for c in children:  # none left behind when the check failed
            if pid_alive(c):
                os.kill(c, signal.SIGKILL)

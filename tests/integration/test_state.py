"""Worker state survives a crash: a rules worker killed in the middle of an intrusion resumes the same
incident, and a restarted detector keeps its tracks (aimass.state)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aimass import contracts
from aimass.clickhouse.client import query_rows
from aimass.settings import GatewaySettings
from aimass.site import load_site
from aimass_gateway.producer import GatewayProducer
from aimass_gateway.scene import SceneRenderer
from conftest import wait_until

pytestmark = pytest.mark.integration
E2E_SITE = str(Path(__file__).parents[1] / "e2e" / "site.yaml")


def _rows(client, sql: str):
    return query_rows(client, sql)[1]


async def _send_raw(ns, items: list[tuple[str, bytes, bytes]]) -> None:
    gw = GatewayProducer(ns.settings(GatewaySettings), "e2e-site")
    async with gw:
        for topic, key, value in items:
            await gw.send_raw(ns.topic_prefix + topic, key, value)
    assert gw.counters.send_errors == 0


@pytest.mark.worker_env(AIMASS_SITE_FILE=E2E_SITE)
def test_a_killed_rules_worker_resumes_the_open_incident(ns, ns_ch, workers):
    """A person stands in cam-in's zone; the rules worker is SIGKILLed after the incident started and a
    new one takes over. Without the stored state the rest of the stay would start a second incident."""
    t0 = contracts.now_ms()

    def det(seq: int, inside: bool) -> tuple[str, bytes, bytes]:
        objects = [contracts.DetectedObject("person", 0, 0.9, 0.7, 0.5, 0.8, 0.9, track_id=7)] if inside else []
        return contracts.TOPIC_DETECTIONS, b"cam-in", contracts.encode(contracts.Detections(
            site_id="e2e-site", camera_id="cam-in", seq=seq, captured_ms=t0 + seq * 200, width=512, height=384,
            model_name="m", model_version="1", objects=objects))

    workers.start("rules", "sink")
    asyncio.run(_send_raw(ns, [det(s, True) for s in range(8)]))
    wait_until(lambda: _rows(ns_ch, "SELECT count() FROM violations FINAL WHERE event = 'start'")[0][0] == 1, 60,
               "the intrusion's start")
    workers.kill("rules")
    workers.start("rules")
    asyncio.run(_send_raw(ns, [det(s, True) for s in range(8, 14)] + [det(s, False) for s in range(14, 22)]))
    wait_until(lambda: _rows(ns_ch, "SELECT count() FROM violations FINAL WHERE event = 'end'")[0][0] >= 1, 60,
               "the intrusion's end", )
    rows = _rows(ns_ch, "SELECT event, violation_id, source_seq FROM violations FINAL "
                        "WHERE rule_id = 'intrusion-cam-in' ORDER BY at_ms")
    assert [r[0] for r in rows] == ["start", "end"], (rows, workers.logs("rules"))
    assert rows[0][1] == rows[1][1] and rows[0][2] == 2 and rows[1][2] == 18  # 5 clear frames: 14..18


@pytest.mark.worker_env(AIMASS_SITE_FILE=E2E_SITE)
def test_a_restarted_detector_keeps_its_tracks(ns, ns_ch, workers):
    """A person walks across cam-in; the detector is SIGKILLed half-way and restarted. Every frame's
    person keeps the one track id, and every frame is detected once."""
    cam = load_site(E2E_SITE).camera("cam-in")
    renderer = SceneRenderer(cam)
    t0 = contracts.now_ms()

    async def send(seqs) -> None:
        gw = GatewayProducer(ns.settings(GatewaySettings), "e2e-site")
        async with gw:
            for s in seqs:
                image, _ = renderer.render(1.0 + s / cam.fps)
                await gw.send_frame("cam-in", s, t0 + s * 200.0, image)
        assert gw.counters.send_errors == 0

    workers.start("detector", "sink")
    asyncio.run(send(range(10)))
    wait_until(lambda: _rows(ns_ch, "SELECT count() FROM frames FINAL")[0][0] == 10, 60, "the first 10 frames")
    workers.kill("detector")
    workers.start("detector")
    asyncio.run(send(range(10, 20)))
    wait_until(lambda: _rows(ns_ch, "SELECT count() FROM frames FINAL")[0][0] == 20, 60, "all 20 frames")
    rows = _rows(ns_ch, "SELECT count(), uniqExact(seq), groupUniqArray(track_id) FROM detections FINAL "
                        "WHERE label = 'person'")
    assert rows[0][0] == 20 and rows[0][1] == 20, rows
    assert len(rows[0][2]) == 1 and rows[0][2][0] >= 0, (rows, workers.logs("detector"))

"""`aimass gateway camera` sources on the real broker: a video file and an image folder."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from aimass import contracts
from aimass.settings import GatewaySettings
from aimass_gateway.camera import run_camera
from aimass_gateway.sources import SourceError, open_source

pytestmark = pytest.mark.integration


def _write_video(path, n: int) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
    assert w.isOpened()
    for i in range(n):
        img = np.zeros((240, 320, 3), np.uint8)
        img[:, i * 10 % 320:] = 180
        w.write(img)
    w.release()


async def _frames(ns, n: int, timeout_s: float = 20.0) -> list[contracts.Frame]:
    c = AIOKafkaConsumer(ns.topic_prefix + contracts.TOPIC_FRAMES, bootstrap_servers=ns.env["AIMASS_KAFKA_BOOTSTRAP"],
                         auto_offset_reset="earliest", group_id=None)
    await c.start()
    out = []
    try:
        async def collect():
            async for m in c:
                out.append((m, contracts.decode(m.value, contracts.Frame)))
                if len(out) >= n:
                    return
        await asyncio.wait_for(collect(), timeout_s)
    finally:
        await c.stop()
    return out


def test_video_file_is_sampled_resized_and_traced(ns, tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(video, 50)  # 2 s at 25 fps
    settings = ns.settings(GatewaySettings)
    gw = asyncio.run(run_camera(settings, "site-a", "cam-file", str(video), fps=10, width=160))
    assert gw.counters.frames == 50 and gw.counters.send_errors == 0  # a file is read at its own pace, every frame
    got = asyncio.run(_frames(ns, 50))
    frames = [f for _, f in got]
    assert [f.seq for f in frames] == list(range(50))
    assert {(f.camera_id, f.width, f.height, f.site_id) for f in frames} == {("cam-file", 160, 120, "site-a")}
    assert all(f.captured_ms <= f.stamps["sent"] for f in frames)
    headers = dict(got[0][0].headers)
    assert headers["traceparent"].startswith(b"00-")
    # paced at --fps: 50 frames at 10 fps take about 5 s
    assert frames[-1].captured_ms - frames[0].captured_ms >= 4500


def test_image_folder_and_bad_sources(ns, tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:02d}.jpg"), np.full((48, 64, 3), i * 60, np.uint8))
    gw = asyncio.run(run_camera(ns.settings(GatewaySettings), "s", "cam-dir", str(tmp_path), fps=30, width=None))
    assert gw.counters.frames == 3
    with pytest.raises(SourceError, match="neither a file"):
        open_source(str(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(empty))

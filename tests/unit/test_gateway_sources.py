"""Camera sources without sockets: the reconnect back-off, the MJPEG multipart parser, what a source
string names, and the grabber's reconnect loop on a scripted source."""

import random
import time

import numpy as np
import pytest
import simplejpeg

from aimass_gateway.sources import (Backoff, Grabber, MultipartJpegParser, SourceError, mask_credentials,
                                    parse_source)


def _jpeg(level: int) -> bytes:
    return simplejpeg.encode_jpeg(np.full((16, 16, 3), level, np.uint8), quality=90, colorspace="BGR")


def test_backoff_grows_to_its_cap_with_jitter_and_resets():
    b = Backoff(initial_s=0.5, max_s=8, factor=2, jitter=0.2, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8]
    for d, c in zip(delays, ceilings):
        assert 0.8 * c <= d <= c
    assert len(set(delays[4:])) == 4  # jittered: many cameras do not knock at the same instant
    b.reset()
    assert b.next_delay() <= 0.5
    assert Backoff(1, 1, jitter=0).next_delay() == 1
    with pytest.raises(ValueError):
        Backoff(initial_s=2, max_s=1)


def test_multipart_parser_uses_content_length_and_markers():
    a, b, c = _jpeg(10), _jpeg(120), _jpeg(250)
    stream = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(a) + a + b"\r\n"
              + b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + b + b"\r\n"  # no length: start to end marker
              + b"--frame\r\ncontent-length: %d\r\n\r\n" % len(c) + c + b"\r\n--frame\r\n")
    p = MultipartJpegParser()
    got = []
    for i in range(0, len(stream), 7):  # arbitrary chunking, as a socket delivers it
        got += p.feed(stream[i:i + 7])
    assert got == [a, b, c]


def test_multipart_parser_refuses_endless_garbage():
    p = MultipartJpegParser(max_frame=1000)
    with pytest.raises(SourceError, match="no end of JPEG"):
        p.feed(b"\xff\xd8" + b"\x00" * 2000)
    with pytest.raises(SourceError, match="larger than"):
        MultipartJpegParser(max_frame=1000).feed(b"Content-Length: 5000\r\n\r\n\xff\xd8")


def test_source_strings(tmp_path):
    assert parse_source("rtsp://cam:secret@10.0.0.5/stream1").kind == "stream"
    assert parse_source("rtsp://cam:secret@10.0.0.5/stream1").label == "rtsp://cam:***@10.0.0.5/stream1"
    assert parse_source("http://10.0.0.6/mjpg").kind == "http" and parse_source("http://x/").live
    assert parse_source("0").kind == "webcam"
    assert parse_source("scene:cam-gate").target == "cam-gate"
    assert parse_source(str(tmp_path)).kind == "folder" and not parse_source(str(tmp_path)).live
    with pytest.raises(SourceError, match="unknown scheme 'ftp'"):
        parse_source("ftp://x/y")
    with pytest.raises(SourceError, match="neither a file"):
        parse_source(str(tmp_path / "missing.mp4"))
    assert mask_credentials("http://u:p@h/x") == "http://u:***@h/x" and mask_credentials("http://h/x") == "http://h/x"


def test_grabber_reconnects_with_backoff_and_keeps_the_latest_frame():
    opens = []

    def opener():
        opens.append(time.monotonic())
        if len(opens) in (1, 2):
            raise SourceError("connection refused")  # the camera is not up yet
        if len(opens) == 3:
            return iter([np.zeros((4, 4, 3), np.uint8)] * 3)  # three frames, then the stream ends

        def forever():
            while True:
                time.sleep(0.01)
                yield np.ones((4, 4, 3), np.uint8)
        return forever()

    g = Grabber(opener, "scripted", Backoff(0.05, 0.2, jitter=0)).start()
    try:
        deadline = time.monotonic() + 5
        got = None
        while time.monotonic() < deadline:
            got = g.latest(0, 0.2)
            if got is not None and got[2][0, 0, 0] == 1:
                break
        assert got is not None and got[2][0, 0, 0] == 1, "frames after the second reconnect"
        h = g.health
        assert h.state == "ok" and h.errors == 3 and h.reconnects == 2  # refused twice, ended once
        assert h.last_error == "the stream ended" and h.frames_read >= 4
        assert opens[1] - opens[0] >= 0.045 and opens[2] - opens[1] >= 0.095  # waited, longer each time
        n = got[0]
        newer = g.latest(n, 2.0)
        assert newer is not None and newer[0] > n
    finally:
        g.stop()
    assert g.health.state == "stopped"


def test_an_rtsp_camera_that_stalls_or_refuses_fails_within_its_timeout_and_is_retried():
    """OpenCV's FFmpeg RTSP client against a port that accepts and never answers (a hung camera) and
    a closed one: both fail within the open timeout, so the grabber's reconnect loop keeps control."""
    import socket

    from aimass.processes import free_port
    from aimass_gateway.sources import open_source

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    try:
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"cannot open camera source 'rtsp://viewer:\*\*\*@127.0.0.1"):
            open_source(f"rtsp://viewer:secret@127.0.0.1:{hung.getsockname()[1]}/stream1", timeout_s=1.0)
        assert 0.8 <= time.monotonic() - t0 < 5.0
        url = f"rtsp://127.0.0.1:{free_port()}/stream1"
        g = Grabber(lambda: open_source(url, timeout_s=1.0), url, Backoff(0.05, 0.1, jitter=0)).start()
        try:
            deadline = time.monotonic() + 5
            while g.health.errors < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert g.health.errors >= 2 and g.health.state == "reconnecting" and g.latest(0, 0) is None
        finally:
            g.stop()
    finally:
        hung.close()

"""JPEG decode (including every way it must fail) and batch packing, on tiny images with known values."""

import cv2
import numpy as np
import pytest

from aimass_detector.preprocess import (
    MAX_IMAGE_PIXELS, BadImage, InputBuffers, decode_jpeg, pack_nchw, pack_nhwc_uint8, resize)

NANODET_MEAN = (103.53, 116.28, 123.675)
NANODET_STD = (57.375, 57.12, 58.395)


def _jpeg(img: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def det_jpeg() -> bytes:
    rng = np.random.default_rng(1)
    return _jpeg(cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), np.uint8), (5, 5), 0))


def test_nchw_normalisation_known_values():
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (10, 20, 30)  # B, G, R
    img[1, 1] = (255, 255, 255)
    out = pack_nchw([img], 2, 2, mean=(10, 20, 30), std=(2, 4, 5))
    assert out.shape == (1, 3, 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], [0, 0, 0])  # pixel equal to the mean
    np.testing.assert_allclose(out[0, :, 1, 1], [(255 - 10) / 2, (255 - 20) / 4, (255 - 30) / 5])
    np.testing.assert_allclose(out[0, :, 0, 1], [-5, -5, -6])  # black: -mean/std


def test_nchw_nanodet_values_and_rgb_order():
    img = np.full((4, 4, 3), (200, 100, 50), np.uint8)
    bgr = pack_nchw([img], 4, 4, NANODET_MEAN, NANODET_STD)
    expected = [(200 - 103.53) / 57.375, (100 - 116.28) / 57.12, (50 - 123.675) / 58.395]
    np.testing.assert_allclose(bgr[0, :, 2, 3], expected, rtol=1e-6)
    rgb = pack_nchw([img], 4, 4, mean=(0, 0, 0), std=(1, 1, 1), rgb=True)
    np.testing.assert_array_equal(rgb[0, :, 0, 0], [50, 100, 200])


def test_batch_of_different_sizes_resized_into_one_reused_buffer():
    a = np.full((480, 640, 3), 7, np.uint8)
    b = np.full((100, 50, 3), 9, np.uint8)
    buffers = InputBuffers()
    buf = buffers.take((4, 3, 32, 64), np.float32)
    out = pack_nchw([a, b], 64, 32, (0, 0, 0), (1, 1, 1), out=buf[:2])
    assert out.shape == (2, 3, 32, 64) and np.shares_memory(out, buf)
    assert np.all(out[0] == 7) and np.all(out[1] == 9)
    with pytest.raises(ValueError):
        pack_nchw([a], 64, 32, (0, 0, 0), (1, 1, 1), out=buf[:2])  # wrong batch size


def test_input_buffers_are_reused_only_once_given_back():
    buffers = InputBuffers()
    first = buffers.take((4, 3, 8, 8), np.float32)
    second = buffers.take((4, 3, 8, 8), np.float32)
    assert not np.shares_memory(first, second)  # both out at once: a batch prepared while one runs
    buffers.give(first[:2])  # a batch's slice gives back the whole buffer
    again = buffers.take((3, 3, 8, 8), np.float32)
    assert again.shape == (3, 3, 8, 8) and np.shares_memory(again, first)  # fits: reused
    assert not np.shares_memory(buffers.take((3, 3, 8, 8), np.float32), first)  # out again: not handed twice
    buffers.give(again)
    assert not np.shares_memory(buffers.take((5, 3, 8, 8), np.float32), first)  # too small: a new one
    assert buffers.take((4, 3, 8, 8), np.uint8).dtype == np.uint8  # another dtype never takes it
    for _ in range(10):
        buffers.give(np.empty((1, 3, 8, 8), np.float32))
    assert len(buffers._free) == InputBuffers.KEEP


def test_nhwc_uint8_rgb():
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    out = pack_nhwc_uint8([img, img], 6, 3)
    assert out.shape == (2, 3, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1, 2, 5], [0, 0, 255])
    np.testing.assert_array_equal(pack_nhwc_uint8([img], 6, 3, rgb=False)[0, 0, 0], [255, 0, 0])


def test_pack_refuses_non_bgr_images():
    with pytest.raises(BadImage, match="image 1"):
        pack_nchw([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)], 4, 4, (0,) * 3, (1,) * 3)
    with pytest.raises(BadImage):
        pack_nhwc_uint8([np.zeros((4, 4, 3), np.float32)], 4, 4)


def test_resize_exact_size_and_passthrough():
    img = np.zeros((480, 640, 3), np.uint8)
    assert resize(img, 416, 416).shape == (416, 416, 3)
    assert resize(img, 640, 480) is img


def test_decode_roundtrip_bgr():
    img = np.zeros((16, 16, 3), np.uint8)
    img[:] = (40, 120, 220)
    out = decode_jpeg(_jpeg(img))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - (40, 120, 220)).max() <= 3  # BGR order survives, JPEG is lossy


def test_decode_grayscale_gives_three_channels():
    out = decode_jpeg(_jpeg(np.full((8, 8), 128, np.uint8)))
    assert out.shape == (8, 8, 3)


def test_reduced_scale_decode_only_when_at_least_half_fits():
    big = _jpeg(np.full((960, 1280, 3), 90, np.uint8))
    assert decode_jpeg(big).shape == (960, 1280, 3)
    assert decode_jpeg(big, min_width=416, min_height=416).shape == (480, 640, 3)  # 1/2
    assert decode_jpeg(big, min_width=300, min_height=200).shape == (240, 320, 3)  # 1/4
    # 640x480 cannot halve and stay >= 416 high: full size, not a slow 7/8 decode
    assert decode_jpeg(_jpeg(np.zeros((480, 640, 3), np.uint8)), 416, 416).shape == (480, 640, 3)


@pytest.mark.parametrize("mangle", [
    lambda d: d[: len(d) // 2],  # truncated mid-scan
    lambda d: d[:-2],  # missing end-of-image marker
    lambda d: d[:100],  # header only
    lambda d: d[:20] + b"\x00" * 200 + d[220:],  # tables overwritten
    lambda d: b"not a jpeg at all",
    lambda d: b"",
    lambda d: b"\xff\xd8\xff",
])
def test_corrupt_or_truncated_jpeg_raises_bad_image(det_jpeg, mangle):
    with pytest.raises(BadImage) as info:
        decode_jpeg(mangle(det_jpeg))
    assert str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("data", [None, "a string", 42])
def test_non_bytes_raise_bad_image(data):
    with pytest.raises(BadImage, match="expected JPEG bytes"):
        decode_jpeg(data)


def test_absurd_dimensions_refused_before_decoding(det_jpeg):
    data = bytearray(det_jpeg)
    sof = data.find(b"\xff\xc0")  # baseline start-of-frame: len(2) precision(1) height(2) width(2)
    assert sof > 0
    data[sof + 5: sof + 9] = (60000).to_bytes(2, "big") * 2
    assert 60000 * 60000 > MAX_IMAGE_PIXELS
    with pytest.raises(BadImage, match="60000x60000"):
        decode_jpeg(bytes(data))

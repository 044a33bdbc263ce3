"""decode_image: the OpenCV fast path gives Pillow's pixels, and refuses what Pillow refuses."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tapetum.serve.images import ImageError, decode_image


def _encode(arr: npt.NDArray[np.uint8], fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _pillow_bgr(data: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


_RNG = np.random.default_rng(7)
_RGB = _RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
_RGBA = _RNG.integers(0, 256, (48, 64, 4), dtype=np.uint8)
_GREY = _RNG.integers(0, 256, (48, 64), dtype=np.uint8)

CASES = {
    "jpeg rgb": (_encode(_RGB, "JPEG", quality=90), "image/jpeg"),
    "jpeg grey": (_encode(_GREY, "JPEG"), "image/jpeg"),
    "jpeg progressive": (_encode(_RGB, "JPEG", progressive=True), "image/jpeg"),
    "png rgb": (_encode(_RGB, "PNG"), "image/png"),
    "png rgba": (_encode(_RGBA, "PNG"), "image/png"),
    "png grey": (_encode(_GREY, "PNG"), "image/png"),
    "bmp": (_encode(_RGB, "BMP"), "image/bmp"),
    "webp": (_encode(_RGB, "WEBP", lossless=True), "image/webp"),
}
_p = io.BytesIO()
Image.fromarray(_RGB).convert("P").save(_p, format="PNG")
CASES["png palette"] = (_p.getvalue(), "image/png")


@pytest.mark.parametrize("name", list(CASES))
def test_same_pixels_as_pillow(name: str) -> None:
    data, ctype = CASES[name]
    out = decode_image(data, ctype)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _pillow_bgr(data))


def test_exif_orientation_is_ignored_like_pillow() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW on display
    data = _encode(_RGB, "JPEG", exif=exif.tobytes())
    out = decode_image(data, "image/jpeg")
    assert out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out, _pillow_bgr(data))


def test_trailing_padding_after_eoi_still_decodes() -> None:
    data = _encode(_RGB, "JPEG") + b"\x00" * 16
    np.testing.assert_array_equal(decode_image(data, "image/jpeg"), _pillow_bgr(data))


@pytest.mark.parametrize("fmt,ctype", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_is_refused(fmt: str, ctype: str, keep: float) -> None:
    big = _RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = _encode(big, fmt)
    with pytest.raises(ImageError) as info:
        decode_image(data[: int(len(data) * keep)], ctype)
    assert info.value.status == 422 and info.value.code == "corrupt_image"


def test_jpeg_cut_then_given_an_eoi_is_not_returned_half_grey() -> None:
    big = _RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = _encode(big, "JPEG")
    forged = data[: len(data) // 2] + b"\xff\xd9"
    try:
        out = decode_image(forged, "image/jpeg")
    except ImageError as exc:
        assert exc.status == 422
    else:  # only acceptable if Pillow would have accepted (and decoded) it the same way
        np.testing.assert_array_equal(out, _pillow_bgr(forged))


def test_corrupt_png_idat_is_refused() -> None:
    data = bytearray(_encode(_RGB, "PNG"))
    idat = data.find(b"IDAT")
    data[idat + 10 : idat + 30] = b"\x00" * 20
    with pytest.raises(ImageError) as info:
        decode_image(bytes(data), "image/png")
    assert info.value.status == 422


def test_mismatch_and_bomb_checked_before_decoding() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(CASES["png rgb"][0], "image/jpeg")
    assert info.value.status == 415
    with pytest.raises(ImageError) as info:
        decode_image(CASES["jpeg rgb"][0], "image/png")
    assert info.value.status == 415


def test_unreadable_bytes_are_refused_without_a_heap_address() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(b"GIF89a but not really an image at all", "image/png")
    assert info.value.status == 422 and info.value.code == "corrupt_image"
    assert "0x" not in str(info.value) and "BytesIO" not in str(info.value)


def test_a_failing_decoder_plugin_does_not_reach_the_client(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_plugin(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'pi_heif'")

    monkeypatch.setattr(Image, "open", broken_plugin)
    with pytest.raises(ImageError) as info:
        decode_image(CASES["png rgb"][0], "image/png")
    assert info.value.status == 422 and info.value.code == "corrupt_image"
    assert "pi_heif" not in str(info.value) and "module" not in str(info.value).lower()
    assert "no image decoder recognised it" in str(info.value)
    assert "pi_heif" in caplog.text  # the detail is in the server log


def test_an_error_naming_the_buffer_reaches_the_client_without_its_address() -> None:
    from tapetum.serve.images import _first_line

    exc = OSError("cannot identify image file <_io.BytesIO object at 0x7f3a2c1d9e40>\nmore")
    assert _first_line(exc) == "cannot identify image file the upload"
    assert _first_line(ValueError("")) == "ValueError"

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapetum.detect.letterbox import LetterboxTransform
from tapetum.errors import ConfigError


@settings(max_examples=60, deadline=None)
@given(
    src_h=st.integers(16, 2000),
    src_w=st.integers(16, 2000),
    centered=st.booleans(),
    data=st.data(),
)
def test_boxes_round_trip_through_letterbox(src_h: int, src_w: int, centered: bool, data) -> None:
    lb = LetterboxTransform((416, 416), centered=centered)
    meta = lb.meta_for((src_h, src_w))
    x1 = data.draw(st.floats(0, src_w - 2))
    y1 = data.draw(st.floats(0, src_h - 2))
    x2 = data.draw(st.floats(x1 + 1, src_w))
    y2 = data.draw(st.floats(y1 + 1, src_h))
    boxes = np.array([[x1, y1, x2, y2]], np.float32)
    back = lb.boxes_to_source(lb.boxes_to_input(boxes, meta), meta)
    np.testing.assert_allclose(back, boxes, atol=1e-2 * max(1.0, 1.0 / min(meta.scale_xy)))
    # the image fills the input along its limiting axis, each side rounded to whole pixels
    scale_x, scale_y = meta.scale_xy
    assert round(src_w * scale_x) == 416 or round(src_h * scale_y) == 416
    assert abs(scale_x - scale_y) <= 1 / min(src_h, src_w)


def test_letterbox_places_image_top_left_with_grey_padding() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[..., 0] = 10  # B
    img[..., 2] = 250  # R
    tensor, meta = LetterboxTransform((416, 416), pad_value=114)(img)
    assert tensor.shape == (3, 416, 416) and tensor.dtype == np.float32
    assert meta.scale == pytest.approx(416 / 200)
    assert meta.pad_x_px == 0 and meta.pad_y_px == 0
    # BGR kept, values 0-255: image region then padding below it
    assert tensor[0, 10, 10] == 10 and tensor[2, 10, 10] == 250
    assert np.all(tensor[:, 300:, :] == 114)


def test_centered_rgb_unit_scale() -> None:
    img = np.full((100, 200, 3), (0, 0, 255), np.uint8)
    tensor, meta = LetterboxTransform((640, 640), centered=True, rgb=True, scale_to_unit=True)(img)
    assert meta.pad_y_px == 160 and meta.pad_x_px == 0
    assert tensor[0, 320, 320] == pytest.approx(1.0)  # red first after the swap
    assert tensor[0, 10, 320] == pytest.approx(114 / 255)


def test_boxes_are_clipped_to_the_source_image() -> None:
    lb = LetterboxTransform((416, 416))
    meta = lb.meta_for((100, 200))
    out = lb.boxes_to_source(np.array([[-10, -10, 416, 416]], np.float32), meta)
    np.testing.assert_allclose(out, [[0, 0, 200, 100]])


def test_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        LetterboxTransform((0, 416))
    with pytest.raises(ConfigError):
        LetterboxTransform((416, 416))(np.zeros((10, 10), np.uint8))

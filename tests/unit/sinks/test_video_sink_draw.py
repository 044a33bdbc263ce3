import numpy as np

from tapetum.core.detections import Detections
from tapetum.sinks.video import draw_forecasts


def _tracked(forecast_xy: list[float]) -> Detections:
    det = Detections(np.array([[90, 90, 110, 110]]), [0.9], [0], tracker_id=[7])
    det.data["forecast_xy"] = np.array([forecast_xy], np.float32)
    det.data["forecast_cov"] = np.array([[25.0, 25.0, 0.0, 100.0, 100.0, 0.0]], np.float32)
    return det


def test_forecast_points_and_path_are_drawn() -> None:
    scene = np.zeros((200, 300, 3), np.uint8)
    draw_forecasts(scene, _tracked([150.0, 100.0, 200.0, 100.0]))
    assert scene[100, 150].any() and scene[100, 200].any()  # both forecast points
    assert scene[100, 125].any()  # the path from the centre (100, 100)
    assert not scene[20, 20].any()


def test_rows_without_a_forecast_are_skipped() -> None:
    scene = np.zeros((200, 300, 3), np.uint8)
    draw_forecasts(scene, _tracked([np.nan, np.nan, np.nan, np.nan]))
    assert not scene.any()

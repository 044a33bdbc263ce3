"""Per-track state sizes: each stream's tracker and enrichers (and sinks) report what they
hold, the pipeline gathers them and the metrics export them as tapetum_state_entries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tapetum.monitor import PipelineMonitor
from tapetum.pipeline import Pipeline
from tapetum.sinks import CallbackSink
from tapetum.track.forecast import ConstantVelocityForecaster, ForecastEnricher
from tests.unit.pipeline.test_pipeline_unit import FakeDetector, FakeSource


def _pipeline() -> tuple[Pipeline, PipelineMonitor]:
    monitor = PipelineMonitor()
    pipe = Pipeline(
        [FakeSource("a", 1, n_frames=8), FakeSource("b", 2, n_frames=8)],
        FakeDetector(),
        sinks=[CallbackSink(lambda r: None), monitor],
        enrichers=[lambda src: ForecastEnricher(ConstantVelocityForecaster(), (1.0,))],
    )
    monitor.attach(pipe)
    return pipe, monitor


def test_each_stream_reports_its_tracker_and_enrichers_state() -> None:
    pipe, _ = _pipeline()
    pipe.run()

    # the fake detector's one box per frame: one track per stream, forecast too
    assert pipe.state_sizes() == {
        "a": {"tracker_tracks": 1, "forecast_tracks": 1},
        "b": {"tracker_tracks": 1, "forecast_tracks": 1},
    }
    assert pipe.sink_state_sizes() == {}  # these sinks keep no per-track state


def test_state_entries_are_exported_per_owner_and_structure() -> None:
    pipe, monitor = _pipeline()
    pipe.run()
    registry = CollectorRegistry()
    registry.register(monitor)

    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    samples = {
        (s.labels["source"], s.labels["structure"]): s.value
        for s in families["tapetum_state_entries"].samples
    }
    assert samples == {
        ("a", "tracker_tracks"): 1,
        ("a", "forecast_tracks"): 1,
        ("b", "tracker_tracks"): 1,
        ("b", "forecast_tracks"): 1,
    }

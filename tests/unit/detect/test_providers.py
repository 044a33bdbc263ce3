"""Execution provider choice and fallback, without a GPU: the GPU part of ORT is faked by a
session factory that fails (or silently lands on CPU) for GPU providers, while CPU
sessions are real ones on a tiny generated model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tapetum.detect.providers import (
    CPU,
    CUDA,
    OPENVINO,
    TENSORRT,
    ProviderOptions,
    ProviderSpec,
    open_with_fallback,
    plan_providers,
    provider_chain,
    provider_options,
    resolve_provider_name,
)
from tapetum.detect.runtime import (
    OnnxModel,
    RuntimeOptions,
    make_session_options,
    thread_affinities,
)
from tapetum.errors import ConfigError, ModelLoadError

ALL = [TENSORRT, CUDA, OPENVINO, CPU]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1x1 conv, input images [1, 3, 8, 8] → [1, 2, 8, 8]."""
    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["out"], name="conv")],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 8, 8])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


class FakeGpuFactory:
    """Real CPU sessions; GPU providers fail (``fail``) or are silently dropped (``drop``)."""

    def __init__(self, fail: set[str] = frozenset(), drop: set[str] = frozenset()) -> None:
        self.fail, self.drop = set(fail), set(drop)
        self.calls: list[list[str]] = []

    def __call__(self, model: bytes, so: Any, chain: list[ProviderSpec]) -> Any:
        names = [name for name, _ in chain]
        self.calls.append(names)
        if names[0] in self.fail:
            raise RuntimeError(f"{names[0]}: libcudart.so.12: cannot open shared object file")
        session = ort.InferenceSession(model, so, providers=[CPU])
        if names[0] in self.drop or names[0] == CPU:
            return session
        return _ReportsProviders(session, names)


class _ReportsProviders:
    """A CPU session that reports GPU providers, as a working GPU session would."""

    def __init__(self, session: Any, providers: list[str]) -> None:
        self._session, self._providers = session, providers

    def get_providers(self) -> list[str]:
        return self._providers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


# ----------------------------------------------------------------------------- planning


def test_default_plan_on_a_cpu_build_notes_every_missing_provider() -> None:
    plan = plan_providers(None, ["AzureExecutionProvider", CPU])
    assert plan.candidates == (CPU,)
    assert [a.provider for a in plan.skipped] == [TENSORRT, CUDA, OPENVINO]
    assert all(a.outcome == "not installed" for a in plan.skipped)


def test_default_plan_prefers_tensorrt_then_cuda_then_openvino() -> None:
    assert plan_providers(None, list(reversed(ALL))).candidates == tuple(ALL)


def test_requested_providers_keep_their_order_and_end_with_cpu() -> None:
    plan = plan_providers(["openvino", "cuda"], ALL)
    assert plan.candidates == (OPENVINO, CUDA, CPU)
    plan = plan_providers(["trt"], [CPU])
    assert plan.candidates == (CPU,)
    assert plan.skipped[0].describe() == f"{TENSORRT} not installed"


def test_provider_names_resolve_and_unknown_names_fail() -> None:
    assert resolve_provider_name(" CUDA ") == CUDA
    assert resolve_provider_name("tensorrt") == TENSORRT
    assert resolve_provider_name("DmlExecutionProvider") == "DmlExecutionProvider"
    with pytest.raises(ConfigError, match="unknown execution provider 'tpu'"):
        resolve_provider_name("tpu")


def test_provider_options_per_provider() -> None:
    opts = ProviderOptions(
        device_id=1, trt_fp16=True, trt_engine_cache_dir="/cache", openvino_device_type="GPU"
    )
    assert provider_options(CUDA, opts) == {"device_id": "1"}
    trt = provider_options(TENSORRT, opts)
    assert trt["device_id"] == "1" and trt["trt_fp16_enable"] == "True"
    assert trt["trt_int8_enable"] == "False"
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == "/cache"
    assert provider_options(OPENVINO, opts) == {"device_type": "GPU"}
    assert provider_options(CPU, opts) == {}


def test_tensorrt_falls_back_per_node_to_cuda_then_cpu() -> None:
    chain = provider_chain(TENSORRT, ALL, ProviderOptions())
    assert [name for name, _ in chain] == [TENSORRT, CUDA, CPU]
    assert [name for name, _ in provider_chain(TENSORRT, [TENSORRT, CPU], ProviderOptions())] == [
        TENSORRT,
        CPU,
    ]
    assert [name for name, _ in provider_chain(CPU, ALL, ProviderOptions())] == [CPU]


# ----------------------------------------------------------------------------- fallback


def test_failing_gpu_provider_falls_back_to_the_next(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    factory = FakeGpuFactory(fail={TENSORRT, CUDA})
    with caplog.at_level(logging.INFO, logger="tapetum.detect.providers"):
        model = OnnxModel(tiny_model, session_factory=factory, available_providers=ALL)
    # OpenVINO "works" here (the fake reports it), so it is chosen after two failures.
    assert model.providers[0] == OPENVINO
    report = model.provider_report
    assert report.chosen == OPENVINO and report.fell_back
    summary = report.summary()
    assert summary.startswith(f"{TENSORRT}: session creation failed: ")
    assert f"{CUDA}: session creation failed: " in summary
    assert summary.endswith(f"using {OPENVINO}")
    assert [r.levelno for r in caplog.records if summary in r.getMessage()] == [logging.WARNING]
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_allclose(model.run(x), np.full((1, 2, 8, 8), 3.0))


def test_requested_cuda_failing_lands_on_cpu_and_runs(tiny_model: Path) -> None:
    factory = FakeGpuFactory(fail={CUDA})
    model = OnnxModel(
        tiny_model,
        RuntimeOptions(providers=("cuda",), provider_options=ProviderOptions(device_id=3)),
        session_factory=factory,
        available_providers=[CUDA, CPU],
    )
    assert model.providers == [CPU]
    assert factory.calls[0] == [CUDA, CPU]
    assert model.provider_report.summary().endswith(f"using {CPU}")
    assert model.run(np.zeros((2, 3, 8, 8), np.float32)).shape == (2, 2, 8, 8)


def test_provider_silently_dropped_by_ort_counts_as_failed(tiny_model: Path) -> None:
    factory = FakeGpuFactory(drop={CUDA})
    model = OnnxModel(tiny_model, session_factory=factory, available_providers=[CUDA, CPU])
    attempts = {a.provider: a for a in model.provider_report.attempts}
    assert attempts[CUDA].outcome == "failed"
    assert "not initialised" in attempts[CUDA].reason
    assert model.provider_report.chosen == CPU


def test_working_gpu_session_is_used_with_one_worker(tiny_model: Path) -> None:
    model = OnnxModel(
        tiny_model,
        RuntimeOptions(workers=2),
        session_factory=FakeGpuFactory(),
        available_providers=[CUDA, CPU],
    )
    assert model.providers[0] == CUDA
    assert not model.provider_report.fell_back
    assert model.workers == 1  # a GPU session serves one run at a time


def test_every_provider_failing_raises_one_error_listing_each(tiny_model: Path) -> None:
    def always_fails(model: bytes, so: Any, chain: list[ProviderSpec]) -> Any:
        raise RuntimeError(f"no luck on {chain[0][0]}")

    with pytest.raises(ModelLoadError) as err:
        OnnxModel(tiny_model, session_factory=always_fails, available_providers=[CUDA, CPU])
    message = str(err.value)
    assert f"{CUDA}: session creation failed: no luck on {CUDA}" in message
    assert f"{CPU}: session creation failed: no luck on {CPU}" in message


def test_open_with_fallback_needs_no_model() -> None:
    plan = plan_providers(["cuda"], [CUDA, CPU])

    class Session:
        def __init__(self, providers: list[str]) -> None:
            self.providers = providers

        def get_providers(self) -> list[str]:
            return self.providers

    def open_session(chain: list[ProviderSpec]) -> Session:
        if chain[0][0] == CUDA:
            raise RuntimeError("CUDA driver version is insufficient\nsecond line")
        return Session([CPU])

    session, report = open_with_fallback(open_session, plan)
    assert session.get_providers() == [CPU]
    assert report.summary() == (
        f"{CUDA}: session creation failed: CUDA driver version is insufficient; using {CPU}"
    )


# -------------------------------------------------------------------------- threading


def test_thread_affinities_skip_the_calling_thread_and_are_one_based() -> None:
    assert thread_affinities((2, 3), 1) == ""
    assert thread_affinities((2, 3), 2) == "4"
    assert thread_affinities((2, 3), 3) == "4;3"


def test_session_options_carry_threads_mode_and_affinity() -> None:
    opts = RuntimeOptions(inter_op_threads=2, execution_mode="parallel", cpu_cores=(0, 1))
    so = make_session_options(opts, threads=2)
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 2
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert so.get_session_config_entry("session.intra_op_thread_affinities") == "2"


def test_pinned_cores_size_and_pin_the_session(tiny_model: Path) -> None:
    seen: list[Any] = []

    def capture(model: bytes, so: Any, chain: list[ProviderSpec]) -> Any:
        seen.append(so)
        return ort.InferenceSession(model, providers=[CPU])

    model = OnnxModel(
        tiny_model, RuntimeOptions(cpu_cores=(0, 1), workers=1), session_factory=capture
    )
    assert model.threads == 2
    assert seen[0].intra_op_num_threads == 2
    assert seen[0].get_session_config_entry("session.intra_op_thread_affinities") == "2"


def test_bad_runtime_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="execution_mode"):
        RuntimeOptions(execution_mode="eager")
    with pytest.raises(ConfigError, match="cpu_cores"):
        RuntimeOptions(cpu_cores=())


def test_provider_lists_from_the_command_line() -> None:
    from tapetum.detect.providers import parse_provider_list

    assert parse_provider_list(None) is None
    assert parse_provider_list(" ") is None
    assert parse_provider_list("cuda, cpu") == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert parse_provider_list("ROCMExecutionProvider") == ("ROCMExecutionProvider",)
    with pytest.raises(ConfigError, match="unknown execution provider 'foo'"):
        parse_provider_list("cuda,foo")

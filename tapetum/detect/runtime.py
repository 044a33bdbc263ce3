"""ONNX Runtime session: loading, provider choice, thread counts, dynamic batch."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum.detect.providers import (
    GPU_PROVIDERS,
    PROVIDER_PREFERENCE,
    ProviderOptions,
    ProviderReport,
    ProviderSpec,
    SessionFactory,
    default_session_factory,
    first_line,
    open_with_fallback,
    plan_providers,
)
from tapetum.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

__all__ = ["PROVIDER_PREFERENCE", "OnnxModel", "RuntimeOptions", "plan_cpu_workers"]

_EXECUTION_MODES = ("sequential", "parallel")


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity and cgroup pinning)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def plan_cpu_workers(
    workers: int = 0, threads: int = 0, cores: int | None = None
) -> tuple[int, int]:
    """Split the CPU between concurrent inference workers.

    Returns ``(workers, intra_op_threads_per_worker)``; a 0 argument means "choose".
    With neither given: two workers of half the cores each when there are at least two
    cores. Concurrent single-threaded runs keep both cores busy while decode and tracking
    take slices of them, where one two-threaded run stalls at every operator whose other
    half was preempted (``bench/pipeline.py`` on 2 cores: ~85-95 vs ~75 FPS).
    """
    cores = cores or available_cores()
    if workers <= 0:
        workers = max(1, cores // threads) if threads > 0 else (2 if cores >= 2 else 1)
    return workers, threads if threads > 0 else max(1, cores // workers)


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How to run a model.

    Attributes:
        intra_op_threads: threads for one run (0 = the cores shared out over ``workers``).
        workers: concurrent runs the pipeline should make on this session (0 = choose:
            see :func:`plan_cpu_workers`; always 1 on a GPU provider).
        allow_spinning: let idle ORT threads busy-wait. Off by default: on a small machine
            spinning steals the cores that decode and tracking need.
        providers: execution providers to try, in order (full names or ``tensorrt``,
            ``cuda``, ``openvino``, ``cpu``); None = ``PROVIDER_PREFERENCE``. The CPU
            provider is always the last resort (see :mod:`tapetum.detect.providers`).
        provider_options: device id, TensorRT precision flags and engine cache, OpenVINO
            device type.
        inter_op_threads: threads running independent graph branches at once (only with
            ``execution_mode="parallel"``).
        execution_mode: ``sequential`` (one operator at a time, the right choice for
            single-path CNNs) or ``parallel`` (branches concurrently).
        cpu_cores: pin this session's intra-op threads to these cores (0-based, as
            ``os.sched_getaffinity`` lists them). ORT pins its pool threads only: thread
            ``i ≥ 1`` goes to ``cpu_cores[i % len]``; the calling thread, which does a share
            of each run, stays where the OS puts it. With ``intra_op_threads=0`` the session
            gets one thread per listed core.
        cpu_mem_arena: keep ONNX Runtime's CPU memory arena (on by default, as ONNX Runtime
            has it). The arena reuses its blocks from run to run, so what it holds is
            bounded by the largest batches the session ran (yolox_nano after batches of
            16: about 200 MB, and no more however many follow) and the C allocator sees
            no churn. Without it every tensor of every run is a malloc and a free: batched
            runs cost more per image (on one thread, yolox_nano at batch 4-8 +13-20 %,
            EfficientNet-Lite0 FP32 at 8-16 +35-40 %), and a server's memory rose all
            the same (``bench/soak.py --mode serve``: it still rises with the arena, in
            steps; see the README's soak table). Off suits a process that runs a rare
            large batch and must give that memory back.
    """

    intra_op_threads: int = 0
    workers: int = 0
    allow_spinning: bool = False
    providers: tuple[str, ...] | None = None
    provider_options: ProviderOptions = field(default_factory=ProviderOptions)
    inter_op_threads: int = 1
    execution_mode: str = "sequential"
    cpu_cores: tuple[int, ...] | None = None
    cpu_mem_arena: bool = True

    def __post_init__(self) -> None:
        if self.execution_mode not in _EXECUTION_MODES:
            raise ConfigError(
                f"execution_mode must be one of {', '.join(_EXECUTION_MODES)}, "
                f"got {self.execution_mode!r}"
            )
        if self.intra_op_threads < 0 or self.inter_op_threads < 0 or self.workers < 0:
            raise ConfigError("thread and worker counts must be ≥ 0")
        if self.cpu_cores is not None and (
            not self.cpu_cores or any(c < 0 for c in self.cpu_cores)
        ):
            raise ConfigError(f"cpu_cores must list core ids ≥ 0, got {self.cpu_cores}")


def thread_affinities(cores: Sequence[int], threads: int) -> str:
    """ORT's ``session.intra_op_thread_affinities`` value pinning ``threads`` to ``cores``.

    ORT wants one entry per pool thread (``threads - 1``: it never pins the caller's
    thread), ``;``-separated, with 1-based processor ids. Empty for a single thread.
    """
    return ";".join(str(cores[i % len(cores)] + 1) for i in range(1, threads))


def make_session_options(options: RuntimeOptions, threads: int) -> Any:
    """``onnxruntime.SessionOptions`` for ``options`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if options.execution_mode == "parallel"
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = options.cpu_mem_arena
    so.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if options.allow_spinning else "0"
    )
    if options.cpu_cores and threads > 1:
        so.add_session_config_entry(
            "session.intra_op_thread_affinities", thread_affinities(options.cpu_cores, threads)
        )
    return so


def _make_batch_dynamic(model: Any) -> bytes | None:
    """Rewrite a batch-1 graph (an ``onnx.ModelProto``, changed in place) so its batch axis
    is dynamic; returns the serialised result.

    Exports often bake batch 1 into ``Reshape`` shape constants; those leading 1s become 0
    ("copy this dim from the input"). Returns None when the model has no fixed batch of 1.
    """
    from onnx import numpy_helper

    inp = model.graph.input[0].type.tensor_type.shape.dim
    if not inp or inp[0].dim_value != 1:
        return None
    inp[0].dim_param = "batch"
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == 1:
            dims[0].dim_param = "batch"
    # Stale intermediate shapes would pin batch 1 again; ORT re-infers them.
    del model.graph.value_info[:]
    reshapes: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type == "Reshape" and len(node.input) > 1:
            reshapes.setdefault(node.input[1], []).append(node)
    for init in model.graph.initializer:
        nodes = reshapes.get(init.name)
        if not nodes:
            continue
        shape = numpy_helper.to_array(init)
        if shape.ndim != 1 or shape.size < 2 or shape[0] != 1 or np.any(shape == 0):
            continue  # a literal 0 elsewhere would change meaning once allowzero goes
        shape = shape.copy()
        shape[0] = 0
        init.CopyFrom(numpy_helper.from_array(shape, init.name))
        for node in nodes:
            # allowzero=1 (torch.export's default) would read the new 0 as a zero-sized
            # dim; without it 0 means "copy", and the target holds no other 0.
            for attr in [a for a in node.attribute if a.name == "allowzero"]:
                node.attribute.remove(attr)
    return bytes(model.SerializeToString())


class OnnxModel:
    """A loaded ONNX model with one float input and its first output.

    ``max_batch`` is 1 for a fixed-batch model whose graph could not be made dynamic;
    :meth:`run` then loops over the batch (still correct, just not batched).

    The execution provider is the first of ``options.providers`` (default: TensorRT, CUDA,
    OpenVINO, CPU) that is installed and opens the model; ``provider_report`` says which
    and why (see :mod:`tapetum.detect.providers`). ``session_factory`` and
    ``available_providers`` replace ORT's for tests.
    """

    def __init__(
        self,
        path: str | Path,
        options: RuntimeOptions | None = None,
        *,
        session_factory: SessionFactory | None = None,
        available_providers: Sequence[str] | None = None,
        input_hw: tuple[int, int] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.options = options or RuntimeOptions()
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        raw = self.path.read_bytes()
        cores = len(self.options.cpu_cores) if self.options.cpu_cores else None
        workers, threads = plan_cpu_workers(
            self.options.workers, self.options.intra_op_threads, cores
        )
        so = make_session_options(self.options, threads)
        plan = plan_providers(
            self.options.providers,
            ort.get_available_providers() if available_providers is None else available_providers,
        )
        factory = session_factory or default_session_factory
        parsed = _parse_model(raw, self.path)
        try:
            dynamic = _make_batch_dynamic(parsed)
        except Exception:  # a graph the rewrite does not understand: keep its fixed batch
            dynamic = None
        chain: list[ProviderSpec] = []

        def open_session(specs: list[ProviderSpec]) -> Any:
            nonlocal dynamic, chain
            chain = specs
            if dynamic is not None:
                try:
                    return factory(dynamic, so, specs)
                except Exception:  # the rewrite did not fit this graph: keep its fixed batch
                    pass
            session = factory(raw, so, specs)
            dynamic = None
            return session

        self.session: Any
        self.provider_report: ProviderReport
        self.session, self.provider_report = open_with_fallback(
            open_session, plan, self.options.provider_options, what=f"{self.path}"
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shapes = [(i.name, i.shape) for i in inputs]
            raise ModelLoadError(f"{self.path}: expected one NCHW image input, found {shapes}")
        self.input_name: str = inputs[0].name
        shape = inputs[0].shape
        # A dynamic height/width takes the caller's ``input_hw`` (e.g. from the metadata).
        hw = [d if isinstance(d, int) else None for d in shape[2:]]
        if None in hw:
            if input_hw is None:
                raise ModelLoadError(
                    f"{self.path}: input {self.input_name} has no fixed size {shape}; "
                    f"give its input size"
                )
            hw = [d if d is not None else int(input_hw[i]) for i, d in enumerate(hw)]
        self.input_hw: tuple[int, int] = (int(hw[0] or 0), int(hw[1] or 0))
        self.output_name: str = self.session.get_outputs()[0].name
        #: providers of the session, the one running the model first.
        self.providers: list[str] = list(self.session.get_providers())
        self.threads = threads
        #: concurrent runs this session is sized for (the pipeline's inference workers).
        self.workers = workers if self.providers[0] not in GPU_PROVIDERS else 1
        self.max_batch = (
            64
            if dynamic is not None and self._batch_works()
            else (64 if not isinstance(shape[0], int) else int(shape[0]))
        )
        if dynamic is not None and self.max_batch == 1:
            self.session = factory(raw, so, chain)
        log.info(
            "loaded %s on %s (%d threads, input %s, max batch %d)",
            self.path.name,
            self.providers[0],
            threads,
            self.input_hw,
            self.max_batch,
        )

    def _batch_works(self) -> bool:
        """Check that a rewritten graph gives the same answer in batch 2 as in batch 1."""
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (2, 3, *self.input_hw)).astype(np.float32)
        try:
            both = self.session.run([self.output_name], {self.input_name: x})[0]
            one = self.session.run([self.output_name], {self.input_name: x[1:]})[0]
        except Exception:
            return False
        return bool(both.shape[0] == 2 and np.allclose(both[1], one[0], atol=1e-3, rtol=1e-3))

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run (B, 3, H, W) float32 through the model; returns its first output (B, ...)."""
        if batch.shape[0] <= self.max_batch:
            return self.session.run([self.output_name], {self.input_name: batch})[0]  # type: ignore[no-any-return]
        return np.concatenate(
            [
                self.session.run(
                    [self.output_name], {self.input_name: batch[i : i + self.max_batch]}
                )[0]
                for i in range(0, batch.shape[0], self.max_batch)
            ]
        )

    def output_shape(self) -> list[int | str | None]:
        return list(self.session.get_outputs()[0].shape)

    @property
    def output_names(self) -> list[str]:
        """Every output's name, in the graph's order (what :meth:`run_all` returns)."""
        return [o.name for o in self.session.get_outputs()]

    def output_shapes(self) -> list[list[int | str | None]]:
        """Every output's declared shape (a str or None for a dynamic dimension)."""
        return [list(o.shape) for o in self.session.get_outputs()]

    @property
    def metadata(self) -> dict[str, str]:
        """The file's ``metadata_props`` (ONNX custom metadata), e.g. Ultralytics' ``names``."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run_all(self, batch: npt.NDArray[np.float32]) -> list[npt.NDArray[Any]]:
        """Run (B, 3, H, W) float32; returns every output (each (B, ...)) in graph order."""
        if batch.shape[0] <= self.max_batch:
            return list(self.session.run(None, {self.input_name: batch}))
        chunks = [
            self.session.run(None, {self.input_name: batch[i : i + self.max_batch]})
            for i in range(0, batch.shape[0], self.max_batch)
        ]
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def _parse_model(raw: bytes, path: Path) -> Any:
    """The file as an ``onnx.ModelProto``, parsed once for every check and rewrite.

    A file that is not an ONNX model is refused here, before any provider is tried, so the
    error says what is wrong with the file rather than listing every provider's failure.
    """
    import onnx

    try:
        model = onnx.ModelProto()
        model.ParseFromString(raw)
        valid = model.ir_version > 0 and len(model.graph.node) > 0
        reason = "no IR version or no graph"
    except Exception as exc:  # protobuf's DecodeError and friends
        valid, reason = False, first_line(exc)
    if not valid:
        raise ModelLoadError(f"cannot load {path} as an ONNX model: {reason}")
    return model

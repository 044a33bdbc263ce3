"""ONNX Runtime session: loading, provider choice, thread counts, dynamic batch."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum.errors import ModelLoadError

log = logging.getLogger(__name__)

#: Providers in order of preference; the first one installed is used.
PROVIDER_PREFERENCE = ("CUDAExecutionProvider", "CPUExecutionProvider")


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
        providers: execution providers to try, in order; None = ``PROVIDER_PREFERENCE``.
    """

    intra_op_threads: int = 0
    workers: int = 0
    allow_spinning: bool = False
    providers: tuple[str, ...] | None = None


def _make_batch_dynamic(model_bytes: bytes) -> bytes | None:
    """Rewrite a batch-1 graph so its batch axis is dynamic.

    Exports often bake batch 1 into ``Reshape`` shape constants; those leading 1s become 0
    ("copy this dim from the input"). Returns None when the model has no fixed batch of 1.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
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
    """

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.options = options or RuntimeOptions()
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        raw = self.path.read_bytes()
        so = ort.SessionOptions()
        workers, threads = plan_cpu_workers(self.options.workers, self.options.intra_op_threads)
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.options.allow_spinning else "0"
        )
        wanted = self.options.providers or PROVIDER_PREFERENCE
        installed = set(ort.get_available_providers())
        providers = [p for p in wanted if p in installed] or ["CPUExecutionProvider"]
        try:
            dynamic = _make_batch_dynamic(raw)
        except Exception:  # not a parseable ONNX graph; the session below says why
            dynamic = None
        self.session: Any = None
        if dynamic is not None:
            try:
                self.session = ort.InferenceSession(dynamic, so, providers=providers)
            except Exception:  # the rewrite did not fit this graph: keep its fixed batch
                dynamic = None
        if self.session is None:
            try:
                self.session = ort.InferenceSession(raw, so, providers=providers)
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot load {self.path} as an ONNX model: {_first_line(exc)}"
                ) from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shapes = [(i.name, i.shape) for i in inputs]
            raise ModelLoadError(f"{self.path}: expected one NCHW image input, found {shapes}")
        self.input_name: str = inputs[0].name
        shape = inputs[0].shape
        if not all(isinstance(d, int) for d in shape[2:]):
            raise ModelLoadError(f"{self.path}: input {self.input_name} has no fixed size {shape}")
        self.input_hw: tuple[int, int] = (int(shape[2]), int(shape[3]))
        self.output_name: str = self.session.get_outputs()[0].name
        self.providers: list[str] = list(self.session.get_providers())
        self.threads = threads
        #: concurrent runs this session is sized for (the pipeline's inference workers).
        self.workers = workers if self.providers[0] == "CPUExecutionProvider" else 1
        self.max_batch = (
            64
            if dynamic is not None and self._batch_works()
            else (64 if not isinstance(shape[0], int) else int(shape[0]))
        )
        if dynamic is not None and self.max_batch == 1:
            self.session = ort.InferenceSession(raw, so, providers=providers)
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

"""Execution providers: which one runs a model, with which options, and why.

The choice is split in two so it can be tested without a GPU:

* :func:`plan_providers` (pure): the user's request and ``onnxruntime.get_available_providers()``
  → the providers to try, in order, plus a note for each one skipped.
* :func:`open_with_fallback`: tries them one at a time through a session factory; a provider
  that fails at session creation (or that ONNX Runtime silently replaced by another) is
  recorded and the next one tried. Only when every one fails is a ``ModelLoadError`` raised,
  listing each failure.

Example:
    >>> plan = plan_providers(["cuda"], ["CUDAExecutionProvider", "CPUExecutionProvider"])
    >>> plan.candidates
    ('CUDAExecutionProvider', 'CPUExecutionProvider')
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tapetum.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
CPU = "CPUExecutionProvider"

#: Providers in order of preference when the user asks for none.
PROVIDER_PREFERENCE = (TENSORRT, CUDA, OPENVINO, CPU)

#: Providers that run on a GPU (one device id each, one concurrent run per session).
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})

_ALIASES = {
    "tensorrt": TENSORRT,
    "trt": TENSORRT,
    "cuda": CUDA,
    "gpu": CUDA,
    "openvino": OPENVINO,
    "ov": OPENVINO,
    "cpu": CPU,
}

#: A provider as ONNX Runtime takes it: its name and its options (all values strings).
ProviderSpec = tuple[str, dict[str, str]]

#: ``factory(model_bytes, session_options, providers) -> session``; the default is
#: ``onnxruntime.InferenceSession`` with ORT's own silent CPU retry turned off.
SessionFactory = Callable[[bytes, Any, list[ProviderSpec]], Any]


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Per-provider settings (ignored by providers they do not concern).

    Attributes:
        device_id: GPU index for CUDA and TensorRT.
        trt_fp16: let TensorRT build FP16 kernels.
        trt_int8: let TensorRT build INT8 kernels (for QDQ models: explicit quantization).
        trt_engine_cache_dir: keep built TensorRT engines here (building takes minutes).
        openvino_device_type: OpenVINO target, e.g. ``CPU``, ``GPU``, ``NPU``, ``AUTO:GPU,CPU``.
    """

    device_id: int = 0
    trt_fp16: bool = False
    trt_int8: bool = False
    trt_engine_cache_dir: str | None = None
    openvino_device_type: str = "CPU"


@dataclass(frozen=True, slots=True)
class ProviderAttempt:
    """What happened to one provider: ``outcome`` is ``used``, ``not installed`` or ``failed``."""

    provider: str
    outcome: str
    reason: str = ""

    def describe(self) -> str:
        if self.outcome == "failed":
            return f"{self.provider}: {self.reason}"
        if self.outcome == "not installed":
            return f"{self.provider} not installed"
        return f"using {self.provider}"


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """The provider a session runs on and what happened to those preferred over it.

    ``chain`` is the list given to ONNX Runtime (the chosen provider first, then the ones
    that take the nodes it cannot run).
    """

    chosen: str
    chain: tuple[str, ...]
    attempts: tuple[ProviderAttempt, ...]

    def summary(self) -> str:
        """One line: ``"TensorrtExecutionProvider not installed; CUDAExecutionProvider:
        session creation failed: ...; using CPUExecutionProvider"``."""
        return "; ".join(a.describe() for a in self.attempts)

    @property
    def fell_back(self) -> bool:
        """True when a provider that was tried failed before the chosen one."""
        return any(a.outcome == "failed" for a in self.attempts)


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    """Providers to try in order, and the wanted ones skipped because not installed.

    ``order`` is everything wanted (installed or not), first choice first.
    """

    order: tuple[str, ...]
    candidates: tuple[str, ...]
    skipped: tuple[ProviderAttempt, ...]
    requested: bool


def resolve_provider_name(name: str) -> str:
    """``"cuda"``/``"CUDA"``/``"CUDAExecutionProvider"`` → ``"CUDAExecutionProvider"``.

    Unknown short names raise ``ConfigError``; a full ``...ExecutionProvider`` name is
    passed through, so providers this module has no alias for can still be asked for.
    """
    key = name.strip()
    if key.endswith("ExecutionProvider"):
        return key
    try:
        return _ALIASES[key.lower()]
    except KeyError:
        known = ", ".join(sorted(_ALIASES))
        raise ConfigError(f"unknown execution provider {name!r}; use one of {known}") from None


def parse_provider_list(text: str | None) -> tuple[str, ...] | None:
    """``"cuda,cpu"`` (a CLI option) → full provider names; None or empty → None.

    Raises:
        ConfigError: an unknown short name.
    """
    if not text:
        return None
    return tuple(resolve_provider_name(p) for p in text.split(",") if p.strip()) or None


def plan_providers(requested: Sequence[str] | None, available: Sequence[str]) -> ProviderPlan:
    """Order the providers to try.

    With no request: :data:`PROVIDER_PREFERENCE`. With one: those providers in the order
    given. Either way the CPU provider ends the list as the last resort (it is always
    built in), and providers not in ``available`` are skipped with a note.
    """
    wanted = [resolve_provider_name(p) for p in requested] if requested else []
    order = list(dict.fromkeys(wanted or PROVIDER_PREFERENCE))
    if CPU not in order:
        order.append(CPU)
    installed = set(available)
    return ProviderPlan(
        order=tuple(order),
        candidates=tuple(p for p in order if p in installed or p == CPU),
        skipped=tuple(ProviderAttempt(p, "not installed") for p in order if p not in installed),
        requested=bool(wanted),
    )


def provider_options(provider: str, options: ProviderOptions) -> dict[str, str]:
    """ONNX Runtime's option dict for ``provider`` (string values, as ORT wants them)."""
    if provider == CUDA:
        return {"device_id": str(options.device_id)}
    if provider == TENSORRT:
        opts = {
            "device_id": str(options.device_id),
            "trt_fp16_enable": str(options.trt_fp16),
            "trt_int8_enable": str(options.trt_int8),
        }
        if options.trt_engine_cache_dir:
            opts["trt_engine_cache_enable"] = "True"
            opts["trt_engine_cache_path"] = options.trt_engine_cache_dir
            opts["trt_timing_cache_enable"] = "True"
            opts["trt_timing_cache_path"] = options.trt_engine_cache_dir
        return opts
    if provider == OPENVINO:
        return {"device_type": options.openvino_device_type}
    return {}


def provider_chain(
    provider: str, candidates: Sequence[str], options: ProviderOptions
) -> list[ProviderSpec]:
    """The list handed to ORT for ``provider``: itself, then the providers that take the nodes
    it cannot run (TensorRT → CUDA when CUDA is a candidate; everything → CPU)."""
    names = [provider]
    if provider == TENSORRT and CUDA in candidates:
        names.append(CUDA)
    if provider != CPU:
        names.append(CPU)
    return [(name, provider_options(name, options)) for name in names]


def default_session_factory(model: bytes, session_options: Any, chain: list[ProviderSpec]) -> Any:
    """``onnxruntime.InferenceSession`` without its silent retry on CPU: a failure raises."""
    import onnxruntime as ort

    return ort.InferenceSession(model, session_options, providers=chain, enable_fallback=0)


def open_with_fallback(
    open_session: Callable[[list[ProviderSpec]], Any],
    plan: ProviderPlan,
    options: ProviderOptions | None = None,
    *,
    what: str = "model",
) -> tuple[Any, ProviderReport]:
    """Open a session on the first candidate of ``plan`` that works.

    ``open_session(chain)`` creates the session (raising on failure). A session whose
    first provider is not the one asked for (ORT dropped a provider it could not
    initialise) counts as a failure of that provider too, unless nothing else is left.

    Raises:
        ModelLoadError: every candidate failed; the message lists each failure.
    """
    options = options or ProviderOptions()
    attempts = list(plan.skipped)
    for provider in plan.candidates:
        chain = provider_chain(provider, plan.candidates, options)
        try:
            session = open_session(chain)
        except Exception as exc:
            attempts.append(
                ProviderAttempt(provider, "failed", f"session creation failed: {first_line(exc)}")
            )
            continue
        got = list(session.get_providers())
        if got and got[0] != provider:
            attempts.append(
                ProviderAttempt(provider, "failed", f"not initialised (ORT ran on {got[0]})")
            )
            if got[0] in plan.candidates[plan.candidates.index(provider) + 1 :]:
                continue  # the next loop turn opens that provider properly
        chosen = got[0] if got else provider
        attempts.append(ProviderAttempt(chosen, "used"))
        report = ProviderReport(chosen, tuple(got or [chosen]), tuple(attempts))
        not_first_choice = plan.requested and chosen != plan.order[0]
        level = logging.WARNING if report.fell_back or not_first_choice else logging.INFO
        log.log(level, "%s: %s", what, report.summary())
        return session, report
    failures = "; ".join(a.describe() for a in attempts if a.outcome == "failed")
    raise ModelLoadError(f"cannot load {what}: {failures}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, capped at 300 characters."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

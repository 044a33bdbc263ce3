"""Pydantic models of the experiment file (the boundary; see :mod:`.spec` for the layout).

Imported only when a file is read, so ``tapetum.experiments`` does not load pydantic.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["ExperimentModel", "validation_message"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ArmModel(BaseModel):
    model_config = _STRICT

    name: str | None = None
    model: Annotated[str, Field(min_length=1)]
    conf: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    nms: Annotated[float, Field(ge=0.0, le=1.0)] = 0.45
    classes: list[str] | None = None
    tracker: str = "bytetrack"
    arch: str | None = None
    imgsz: Annotated[int | None, Field(gt=0, le=4096)] = None
    threads: Annotated[int, Field(ge=0, le=256)] = 0


class CanaryModel(BaseModel):
    model_config = _STRICT

    by: Literal["stream", "frame", "key", "header"] = "stream"
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] = "x-tapetum-split"
    shares: dict[str, float | tuple[float, float]]


class GuardrailModel(BaseModel):
    model_config = _STRICT

    metric: str
    max: float | None = None
    min: float | None = None
    max_ratio: Annotated[float | None, Field(gt=0.0)] = None
    min_ratio: Annotated[float | None, Field(gt=0.0)] = None


class RuleModel(BaseModel):
    model_config = _STRICT

    metric: str
    goal: Literal["increase", "decrease"] | None = None
    require: Literal["better", "not_worse"] = "not_worse"
    min_effect: Annotated[float, Field(ge=0.0)] = 0.0
    relative: bool = False


class DecisionModel(BaseModel):
    model_config = _STRICT

    window_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 1.0
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    resamples: Annotated[int, Field(ge=100, le=100_000)] = 2000
    seed: int = 0
    rules: list[RuleModel] = []


class OfflineModel(BaseModel):
    model_config = _STRICT

    data: str | None = None
    split: str | None = None
    images: str | None = None
    mot: str | None = None
    protocol: Literal["deployed", "coco"] = "deployed"
    resamples: Annotated[int, Field(ge=0, le=100_000)] = 1000
    max_images: Annotated[int | None, Field(gt=0)] = None

    @model_validator(mode="after")
    def _something_to_evaluate(self) -> OfflineModel:
        if self.data is None and self.mot is None:
            raise ValueError("give data (labelled images) or mot (MOTChallenge sequences)")
        return self


class ActModel(BaseModel):
    model_config = _STRICT

    alias: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")] = "champion"


class ExperimentModel(BaseModel):
    model_config = _STRICT

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    control: ArmModel
    variants: Annotated[list[ArmModel], Field(min_length=1, max_length=8)]
    mode: Literal["shadow", "canary"] = "shadow"
    canary: CanaryModel | None = None
    guardrails: list[GuardrailModel] = []
    decision: DecisionModel = DecisionModel()
    offline: OfflineModel | None = None
    act: ActModel = ActModel()


def validation_message(exc: Exception, most: int = 3) -> str:
    """``variants.0.conf: Input should be less than or equal to 1; …`` from a pydantic
    error (the first ``most`` problems)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for err in exc.errors()[:most]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - most
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")

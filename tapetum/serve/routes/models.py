"""The loaded models: listed and described with ``read``, loaded and unloaded at runtime
with ``admin``; a default model served from a registry alias is reloaded now with
``admin`` (``POST /v1/models/{name}/reload``, see :mod:`tapetum.serve.follow`)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from tapetum.serve.auth import Scope
from tapetum.serve.rest.errors import ERROR_RESPONSES, ResponseTable
from tapetum.serve.rest.guards import Guards
from tapetum.serve.rest.state import AppState
from tapetum.serve.schemas import ErrorResponse, ModelInfo, ModelList, ModelReload
from tapetum.serve.settings import MODEL_NAME_PATTERN, Principal

__all__ = ["ModelLoad", "build_router"]

_LOAD_RESPONSES: ResponseTable = {
    **ERROR_RESPONSES,
    400: {
        "model": ErrorResponse,
        "description": "The path is not an .onnx file in the server's model folders",
    },
    409: {"model": ErrorResponse, "description": "The name is taken, or too many models"},
    422: {"model": ErrorResponse, "description": "Invalid body, or the file does not load"},
}
_UNLOAD_RESPONSES: ResponseTable = {
    **ERROR_RESPONSES,
    404: {"model": ErrorResponse, "description": "Unknown model"},
    409: {"model": ErrorResponse, "description": "The default model cannot be unloaded"},
}
_RELOAD_RESPONSES: ResponseTable = {
    **ERROR_RESPONSES,
    404: {
        "model": ErrorResponse,
        "description": "Unknown model, or the registry no longer has its alias or model",
    },
    409: {
        "model": ErrorResponse,
        "description": "The model does not follow a registry alias (a file or a pinned version)",
    },
    503: {
        "model": ErrorResponse,
        "description": "Model not loaded yet, registry unreachable, or the new version "
        "could not be loaded (the current one keeps serving)",
    },
}


class ModelLoad(BaseModel):
    """Body of ``POST /v1/models``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "yolox_s", "path": "/models/yolox_s.onnx", "conf": 0.4}]
        },
    )

    name: str = Field(
        pattern=MODEL_NAME_PATTERN, description="Name for the detect routes' `model` parameter."
    )
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="An ONNX detector file in one of the server's model folders (absolute, "
        "or relative to a folder).",
    )
    conf: float | None = Field(
        None, ge=0.0, le=1.0, description="The model's default score threshold."
    )


def build_router(state: AppState, guards: Guards) -> APIRouter:
    """``/v1/models`` and ``/v1/models/{name}``."""
    router = APIRouter()
    service = state.service

    @router.get(
        "/v1/models",
        response_model=ModelList,
        tags=["models"],
        responses=ERROR_RESPONSES,
    )
    async def list_models(_key: Principal = guards.read) -> ModelList:
        """The loaded models, the default first (file paths for ``admin`` keys, file names
        for others). Needs the ``read`` scope."""
        return service.list_models(full_path=_key.allows(Scope.ADMIN))

    @router.post(
        "/v1/models",
        response_model=ModelInfo,
        status_code=201,
        tags=["models"],
        responses=_LOAD_RESPONSES,
        dependencies=[guards.admin],
    )
    async def load_model(body: ModelLoad) -> ModelInfo:
        """Load and warm another model (an ONNX file in the server's model folders) under a
        name, for the ``model`` parameter of the detect routes. Needs the ``admin`` scope."""
        return await anyio.to_thread.run_sync(
            lambda: service.load_model(body.name, body.path, body.conf)
        )

    @router.delete(
        "/v1/models/{name}",
        status_code=204,
        response_class=Response,
        tags=["models"],
        responses=_UNLOAD_RESPONSES,
        dependencies=[guards.admin],
    )
    async def unload_model(name: str) -> Response:
        """Unload a model loaded at runtime (not the default one: 409). Needs the
        ``admin`` scope."""
        service.unload_model(name)
        return Response(status_code=204)

    @router.post(
        "/v1/models/{name}/reload",
        response_model=ModelReload,
        tags=["models"],
        responses=_RELOAD_RESPONSES,
        dependencies=[guards.admin],
    )
    async def reload_model(name: str) -> ModelReload:
        """Check the registry alias the default model follows now (``tapetum serve --model
        models:/NAME@ALIAS``): a new version is loaded and warmed beside the serving one,
        then swapped in, before this answers; requests under way finish on the old one.
        Needs the ``admin`` scope."""
        from tapetum.serve.follow import reload_model as reload

        return await anyio.to_thread.run_sync(lambda: reload(service, state.follower, name))

    @router.get(
        "/v1/models/{name}",
        response_model=ModelInfo,
        tags=["models"],
        responses=ERROR_RESPONSES,
    )
    async def describe_model(name: str, _key: Principal = guards.read) -> ModelInfo:
        """One loaded model by name. Needs the ``read`` scope."""
        return service.model_info(name, full_path=_key.allows(Scope.ADMIN))

    return router

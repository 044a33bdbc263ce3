"""Detection on uploaded images: one image (``/v1/detect``, optionally tracked across the
calls of a ``session_id``) or a batch (``/v1/detect/batch``). Both need ``infer``.

Every check that needs no body (model ready, known model, threshold, classes, session id)
runs before the upload is read; the model call and the response's serialisation run in a
worker thread.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from tapetum.serve.rest.errors import ERROR_RESPONSES, ResponseTable
from tapetum.serve.rest.guards import Guards
from tapetum.serve.rest.state import AppState
from tapetum.serve.rest.uploads import read_batch_upload, read_single_upload
from tapetum.serve.schemas import BatchDetectResponse, DetectResponse, ErrorResponse
from tapetum.serve.service import EncodedImage
from tapetum.serve.settings import SESSION_ID_PATTERN, ApiError, Principal

__all__ = ["ClassesQuery", "ConfQuery", "ModelQuery", "build_router"]

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")

_UPLOAD_RESPONSES: ResponseTable = {
    **ERROR_RESPONSES,
    400: {"model": ErrorResponse, "description": "Empty or malformed body"},
    413: {"model": ErrorResponse, "description": "Too many bytes or pixels"},
    415: {"model": ErrorResponse, "description": "Not an accepted image type"},
}

#: Query parameters the detect routes share (one definition, one OpenAPI description).
ConfQuery = Annotated[
    float | None,
    Query(ge=0.0, le=1.0, description="Score threshold (default: the server's).", examples=[0.35]),
]
ClassesQuery = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="Comma-separated class names or ids to keep.",
        examples=["person,bus"],
    ),
]
ModelQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Name of the loaded model to run (default: the server's default model). "
        "A tracking session should stick to one model.",
        examples=["yolox_nano"],
    ),
]


def _split_classes(classes: str | None) -> list[str] | None:
    """The ``classes`` query (comma-separated) → its entries; 422 when it names none."""
    if classes is None:
        return None
    wanted = [c for c in classes.split(",") if c.strip()]
    if not wanted:
        raise ApiError(422, "invalid_request", "classes: give class names or ids, comma-separated")
    return wanted


def _json_response(body: BaseModel, headers: dict[str, str] | None = None) -> Response:
    """Serialise a response model once, in the calling (worker) thread.

    The route still declares ``response_model`` for the OpenAPI document; returning a
    ready ``Response`` skips FastAPI's second validation pass over a model that the
    service has just built and validated.
    """
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


def _image_body() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": "The image as the raw body with its Content-Type, or multipart "
            "with a `file` part.",
            "content": {
                **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    }


def _batch_body(max_batch: int) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "maxItems": max_batch,
                            }
                        },
                        "required": ["files"],
                    }
                }
            },
        }
    }


def build_router(state: AppState, guards: Guards) -> APIRouter:
    """``/v1/detect`` and ``/v1/detect/batch``."""
    router = APIRouter()
    settings, service, metrics = state.settings, state.service, state.metrics

    @router.post(
        "/v1/detect",
        response_model=DetectResponse,
        tags=["detect"],
        responses=_UPLOAD_RESPONSES,
        openapi_extra=_image_body(),
    )
    async def detect(
        request: Request,
        _key: Principal = guards.infer,
        conf: ConfQuery = None,
        classes: ClassesQuery = None,
        session_id: str | None = Query(
            None,
            pattern=SESSION_ID_PATTERN,
            description="Track objects across calls of this session (one camera's frames).",
            examples=["cam-1"],
        ),
        model: ModelQuery = None,
    ) -> Response:
        """Detect objects in one image; with ``session_id``, track them across the
        caller's calls of that session. Needs the ``infer`` scope."""
        # Under an A/B experiment a request that names no model is answered by its arm,
        # named in the X-Tapetum-Variant header.
        experiment = state.experiment
        arm = experiment.assign(_key.key_id, request.headers, model) if experiment else None
        served = arm.model if arm is not None else model
        service.detector()
        service.check_conf(conf, served)
        wanted = _split_classes(classes)
        service.check_request(conf, wanted, session_id, served)  # before reading the body
        t0 = time.perf_counter()
        data, ctype = await read_single_upload(request, settings.max_upload_bytes)
        observe = metrics.inference.labels("detect").observe

        def work() -> Response:
            image = EncodedImage(data, ctype)
            answer = service.detect(
                image,
                conf,
                wanted,
                session_id,
                started_s=t0,
                observe=observe,
                model=served,
                owner=_key.key_id,
            )
            headers = None
            if experiment is not None and arm is not None:
                headers = experiment.served(arm, answer, image)
            return _json_response(answer, headers)

        return await anyio.to_thread.run_sync(work)

    @router.post(
        "/v1/detect/batch",
        response_model=BatchDetectResponse,
        tags=["detect"],
        responses=_UPLOAD_RESPONSES,
        openapi_extra=_batch_body(settings.max_batch),
    )
    async def detect_batch(
        request: Request,
        _key: Principal = guards.infer,
        conf: ConfQuery = None,
        classes: ClassesQuery = None,
        model: ModelQuery = None,
    ) -> Response:
        """Detect objects in several images (multipart ``files``) with one batched model
        call. Needs the ``infer`` scope."""
        service.detector()
        service.check_conf(conf, model)
        wanted = _split_classes(classes)
        service.check_request(conf, wanted, model=model)  # before reading the body
        t0 = time.perf_counter()
        uploads = await read_batch_upload(request, settings.max_upload_bytes, settings.max_batch)
        images = [EncodedImage(data, ctype) for data, ctype in uploads]
        observe = metrics.inference.labels("detect_batch").observe
        return await anyio.to_thread.run_sync(
            lambda: _json_response(
                service.detect_batch(
                    images, conf, wanted, field="files", started_s=t0, observe=observe, model=model
                )
            )
        )

    return router

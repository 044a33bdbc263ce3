"""Server-side streams: started, listed, inspected and stopped over the API, and their
live results as Server-Sent Events. The work is the app's
:class:`~tapetum.serve.streams.StreamManager` (shared with the gRPC server).

A stream belongs to the key (or token subject) that started it: every route answers only
about the caller's own streams (another's is a 404, as an unknown id) unless the caller has
``admin`` (see :mod:`tapetum.serve.ownership`).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from tapetum.core.breaker import CircuitOpenError
from tapetum.errors import SourceError, SubscriptionLimitError
from tapetum.serve.ownership import caller_of
from tapetum.serve.rest.errors import ERROR_RESPONSES, ResponseTable
from tapetum.serve.rest.guards import Guards, credential_watch
from tapetum.serve.rest.state import AppState
from tapetum.serve.schemas import ErrorResponse
from tapetum.serve.settings import ApiError, Principal
from tapetum.serve.streams import (
    StreamInfo,
    StreamLimitError,
    StreamOptions,
    UnknownStreamError,
)

__all__ = ["StreamCreate", "build_router"]


class StreamCreate(StreamOptions):
    """Body of ``POST /v1/streams``."""

    uri: str = Field(
        min_length=1,
        max_length=4096,
        description="A video file or image folder under the server's media roots, or a live "
        "URL (rtsp, rtsps, rtmp, http, https) of a public host or one the server allows.",
        examples=["rtsp://cam-7:554/Streaming/101"],
    )


_STREAM_RESPONSES: ResponseTable = {
    **ERROR_RESPONSES,
    404: {"model": ErrorResponse, "description": "Unknown stream, or another key's"},
}
_RESULTS_RESPONSES: ResponseTable = {
    **_STREAM_RESPONSES,
    429: {
        "model": ErrorResponse,
        "description": "The key follows as many streams as it may, or rate limited",
    },
}
_START_RESPONSES: ResponseTable = {
    **ERROR_RESPONSES,
    400: {
        "model": ErrorResponse,
        "description": "The source policy refuses the URI, or the source cannot be opened",
    },
    429: {
        "model": ErrorResponse,
        "description": "Too many streams (on the server or for this key), or rate limited",
    },
    503: {"model": ErrorResponse, "description": "Model not ready, or the URI's breaker is open"},
}


def _unknown(stream_id: str) -> ApiError:
    return ApiError(404, "unknown_stream", f"no stream {stream_id!r}")


def build_router(state: AppState, guards: Guards) -> APIRouter:
    """``/v1/streams``: server-side pipelines and their live results (SSE)."""
    router = APIRouter()
    streams, settings, check_conf = state.streams, state.settings, state.service.check_conf

    @router.post(
        "/v1/streams",
        response_model=StreamInfo,
        status_code=201,
        tags=["streams"],
        responses=_START_RESPONSES,
    )
    async def start_stream(body: StreamCreate, _key: Principal = guards.infer) -> StreamInfo:
        """Start detecting and tracking on a source in the background; the stream is the
        caller's. Needs ``infer``."""
        if body.conf is not None:
            check_conf(body.conf)
        options = StreamOptions(
            tracker=body.tracker,
            conf=body.conf,
            realtime=body.realtime,
            detect_every=body.detect_every,
            scheduler=body.scheduler,
        )
        caller = caller_of(_key)
        try:
            # Opening probes the source (up to its open timeout): off the event loop.
            return await anyio.to_thread.run_sync(streams.start, body.uri, options, caller)
        except StreamLimitError as exc:
            raise ApiError(429, "too_many_streams", str(exc), {"Retry-After": "5"}) from exc
        except CircuitOpenError as exc:
            retry = max(1, math.ceil(exc.retry_after_s))
            raise ApiError(
                503, "source_circuit_open", str(exc), {"Retry-After": str(retry)}
            ) from exc
        except SourceError as exc:
            raise ApiError(400, "bad_source", str(exc)) from exc

    @router.get(
        "/v1/streams",
        response_model=list[StreamInfo],
        tags=["streams"],
        responses=ERROR_RESPONSES,
    )
    async def list_streams(_key: Principal = guards.read) -> list[StreamInfo]:
        """The caller's running and recently finished streams (an admin's: everyone's)
        with live stats. Needs ``read``."""
        return streams.list(caller_of(_key))

    @router.get(
        "/v1/streams/{stream_id}",
        response_model=StreamInfo,
        tags=["streams"],
        responses=_STREAM_RESPONSES,
    )
    async def get_stream(stream_id: str, _key: Principal = guards.read) -> StreamInfo:
        """One of the caller's streams with live stats. Needs ``read``."""
        try:
            return streams.get(stream_id, caller_of(_key))
        except UnknownStreamError:
            raise _unknown(stream_id) from None

    @router.delete(
        "/v1/streams/{stream_id}",
        response_model=StreamInfo,
        tags=["streams"],
        responses=_STREAM_RESPONSES,
    )
    async def stop_stream(stream_id: str, _key: Principal = guards.infer) -> StreamInfo:
        """Stop one of the caller's streams (queued frames are finished or dropped,
        counted) and forget it. Returns its final state. Needs ``infer``."""
        caller = caller_of(_key)
        try:
            return await anyio.to_thread.run_sync(lambda: streams.stop(stream_id, caller=caller))
        except UnknownStreamError:
            raise _unknown(stream_id) from None

    @router.get(
        "/v1/streams/{stream_id}/results",
        tags=["streams"],
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "Server-Sent Events: one `data:` JSON line per frame result "
                '(the JSONL record; `"predicted": true` on a frame the detector skipped, '
                "whose boxes are the tracker's predictions), `: heartbeat` comments when "
                "idle, and a final `event: end` when the stream ends.",
            },
            **_RESULTS_RESPONSES,
        },
    )
    async def stream_results(
        request: Request, stream_id: str, _key: Principal = guards.read
    ) -> StreamingResponse:
        """Live results of one of the caller's streams as Server-Sent Events. Needs
        ``read``."""
        try:
            sub = streams.subscribe(stream_id, asyncio.get_running_loop(), caller=caller_of(_key))
        except UnknownStreamError:
            raise _unknown(stream_id) from None
        except SubscriptionLimitError as exc:
            raise ApiError(429, "too_many_subscriptions", str(exc), {"Retry-After": "5"}) from exc
        heartbeat_s = settings.sse_heartbeat_s
        watch = credential_watch(request)

        async def events() -> AsyncIterator[str]:
            # Starlette cancels this generator when the client disconnects.
            try:
                yield ": connected\n\n"
                last_s = time.monotonic()
                while True:
                    if watch.due():  # a revoked key or an expired token ends the stream
                        try:
                            await anyio.to_thread.run_sync(watch.check)
                        except ApiError as exc:
                            ended = {"stream_id": stream_id, "reason": exc.code}
                            yield f"event: end\ndata: {json.dumps(ended)}\n\n"
                            return
                    if sub.expired:  # the most a subscription lasts: subscribe again
                        ended = {"stream_id": stream_id, "reason": "subscription_expired"}
                        yield f"event: end\ndata: {json.dumps(ended)}\n\n"
                        return
                    items = await sub.aget(min(heartbeat_s, 1.0))
                    now = time.monotonic()
                    if items is None:
                        end = {"stream_id": stream_id, "dropped": sub.dropped}
                        yield f"event: end\ndata: {json.dumps(end)}\n\n"
                        return
                    if items:
                        yield "".join(f"data: {item}\n\n" for item in items)
                        last_s = now
                    elif now - last_s >= heartbeat_s:
                        yield ": heartbeat\n\n"
                        last_s = now
            finally:
                streams.unsubscribe(stream_id, sub)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router

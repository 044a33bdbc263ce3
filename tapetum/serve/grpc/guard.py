"""The gRPC server's gate: authentication, message size and streaming-call limits, applied
in a server interceptor before the servicer runs and before a request message is read.

gRPC Python reads a unary request message in full (up to the server-wide
``grpc.max_receive_message_length``, over 160 MiB for a full ``DetectBatch``) before the
handler runs, and runs interceptors on its one polling thread. So :class:`CallGuard`
(installed by :func:`~tapetum.serve.grpc.server.create_grpc_server`) swaps every method's
handler for a *request-streaming* one over raw bytes, which gRPC calls without reading
anything. In a handler thread, in this order, it:

1. authenticates the call from its metadata (``authorization: Bearer <key>`` or
   ``x-api-key``) through the shared :class:`~tapetum.serve.authenticator.Authenticator`:
   failures are counted per client address, and an address over its budget gets
   RESOURCE_EXHAUSTED before anything is verified (``Health`` needs no key);
2. takes a streaming slot for ``DetectStream`` / ``StreamResults``: at most
   ``max_streaming_calls_per_key`` per key, and at most ``grpc_max_workers -
   grpc_health_reserve`` in all, so that long calls can never hold every handler thread
   and ``Health`` (and unary calls) always find one;
3. reads the request message(s), refusing each one over the method's own limit
   (:func:`method_limits`: one image for ``Detect`` / ``DetectStream`` frames, a batch for
   ``DetectBatch``, ``max_json_body_bytes`` for the rest) with RESOURCE_EXHAUSTED, and
   re-checks the credential before each ``DetectStream`` frame (a revoked key or an
   expired token ends the call);
4. calls the servicer with the parsed request, the call's :class:`GuardedCall` bound to
   the thread (:func:`current_call`): the servicer takes the principal from it and
   ``StreamResults`` re-checks the credential as it waits (:func:`check_current_call`).

Errors go through the servicer's own abort (one REST → gRPC status mapping).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from tapetum.serve.authenticator import Authenticator, CredentialWatch
from tapetum.serve.settings import ApiError, Principal, ServeSettings

__all__ = [
    "CallGuard",
    "GuardedCall",
    "StreamingSlots",
    "check_current_call",
    "current_call",
    "method_limits",
]

Abort = Callable[[grpc.ServicerContext, Exception], NoReturn]

#: Protobuf framing around an image in a request, generous.
_MESSAGE_OVERHEAD_BYTES = 64 * 1024
_PER_IMAGE_OVERHEAD_BYTES = 1024

_local = threading.local()


def method_limits(settings: ServeSettings) -> tuple[dict[str, int], int]:
    """(method name → largest request message in bytes, the limit of every other method)."""
    image = settings.max_upload_bytes + _MESSAGE_OVERHEAD_BYTES
    batch = (
        settings.max_batch * (settings.max_upload_bytes + _PER_IMAGE_OVERHEAD_BYTES)
        + _MESSAGE_OVERHEAD_BYTES
    )
    return {"Detect": image, "DetectStream": image, "DetectBatch": batch}, (
        settings.max_json_body_bytes
    )


class _Anonymous:
    key_id = "anonymous"

    def allows(self, scope: object) -> bool:
        return True


@dataclass(slots=True)
class GuardedCall:
    """One admitted call: who made it, and the watch on its credential."""

    principal: Principal
    watch: CredentialWatch
    _release: Callable[[], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give back the streaming slot (idempotent)."""
        release, self._release = self._release, None
        if release is not None:
            release()


def current_call() -> GuardedCall | None:
    """The call the current handler thread serves (None outside a guarded handler)."""
    return getattr(_local, "call", None)


def check_current_call() -> None:
    """Re-check the current call's credential (throttled); raise ApiError(401) to end it."""
    call = current_call()
    if call is not None:
        call.watch.check()


@contextmanager
def _bound(call: GuardedCall) -> Iterator[None]:
    previous = getattr(_local, "call", None)
    _local.call = call
    try:
        yield
    finally:
        _local.call = previous


class StreamingSlots:
    """Counts open streaming calls, per principal and in all; thread-safe.

    Args:
        total: most streaming calls at once (leave handler threads for the rest).
        per_principal: most per key or token subject; None: no per-principal cap.
    """

    def __init__(self, total: int, per_principal: int | None) -> None:
        self.total = total
        self.per_principal = per_principal
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._count = 0

    def acquire(self, key_id: str) -> Callable[[], None]:
        """Take a slot for ``key_id``; returns its release (idempotent).

        Raises:
            ApiError: 429 ``too_many_streaming_calls`` when a cap is reached.
        """
        with self._lock:
            mine = self._open.get(key_id, 0)
            if self.per_principal is not None and mine >= self.per_principal:
                raise ApiError(
                    429,
                    "too_many_streaming_calls",
                    f"this key already holds {mine} streaming calls, the most it may; "
                    "end one first",
                    {"Retry-After": "5"},
                )
            if self._count >= self.total:
                raise ApiError(
                    429,
                    "too_many_streaming_calls",
                    "the server holds its most streaming calls; retry later",
                    {"Retry-After": "5"},
                )
            self._open[key_id] = mine + 1
            self._count += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                self._count -= 1
                left = self._open[key_id] - 1
                if left:
                    self._open[key_id] = left
                else:
                    del self._open[key_id]

        return release

    def open_calls(self) -> int:
        with self._lock:
            return self._count


def _peer_address(context: grpc.ServicerContext) -> str:
    peer = context.peer() or "unknown"  # ipv4:127.0.0.1:5555, ipv6:[::1]:5555, unix:...
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or rest
    return peer


def _credential(context: grpc.ServicerContext) -> str | None:
    metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
    scheme, _, token = metadata.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return metadata.get("x-api-key", "").strip() or None


class CallGuard(grpc.ServerInterceptor):
    """Wraps every method of the service (see the module docstring).

    Args:
        authenticator: None when auth is off (every call is anonymous).
        limits / default_limit: request message caps by method name, bytes.
        public: methods that need no credential (``Health``).
        slots: the streaming-call counter.
        recheck_s: how often a long call re-checks its credential.
        abort: the servicer's abort (maps an exception to a status and raises).
    """

    def __init__(
        self,
        *,
        authenticator: Authenticator | None,
        limits: Mapping[str, int],
        default_limit: int,
        public: frozenset[str],
        slots: StreamingSlots,
        recheck_s: float,
        abort: Abort,
    ) -> None:
        self.authenticator = authenticator
        self.limits = dict(limits)
        self.default_limit = default_limit
        self.public = public
        self.slots = slots
        self.recheck_s = recheck_s
        self.abort = abort

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        # Runs on gRPC's polling thread: only cheap work here, nothing is verified yet.
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        name = str(handler_call_details.method).rpartition("/")[2]
        return self._wrap(handler, name)

    # ------------------------------------------------------------------ admission

    def _admit(self, context: grpc.ServicerContext, name: str, streaming: bool) -> GuardedCall:
        raw: str | None = None
        principal: Principal
        if self.authenticator is None or name in self.public:
            principal = _Anonymous()
        else:
            raw = _credential(context)
            principal = self.authenticator.authenticate(raw, _peer_address(context))
        call = GuardedCall(
            principal,
            CredentialWatch(
                None if name in self.public else self.authenticator, raw, principal, self.recheck_s
            ),
        )
        if streaming:
            key = principal.key_id if self.authenticator is not None else "anonymous"
            call._release = self.slots.acquire(key)
            context.add_callback(call.release)
        return call

    # ------------------------------------------------------------------ messages

    def _parse(self, raw: bytes, limit: int, deserialize: Callable[[bytes], Any] | None) -> Any:
        if len(raw) > limit:
            raise ApiError(
                413,
                "message_too_large",
                f"the request message is {len(raw)} bytes; this method takes at most {limit} bytes",
            )
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception:  # a protobuf DecodeError: the client's fault, not ours
            raise ApiError(400, "bad_request", "the request message does not parse") from None

    def _first(
        self, raw_iter: Iterator[bytes], limit: int, deserialize: Callable[[bytes], Any] | None
    ) -> Any:
        raw = next(raw_iter, None)
        if raw is None:
            raise ApiError(400, "bad_request", "the call carried no request message")
        return self._parse(raw, limit, deserialize)

    def _each(
        self,
        raw_iter: Iterator[bytes],
        limit: int,
        deserialize: Callable[[bytes], Any] | None,
        call: GuardedCall,
    ) -> Iterator[Any]:
        for raw in raw_iter:
            call.watch.check()  # a revoked key or an expired token: no more frames
            yield self._parse(raw, limit, deserialize)

    # ------------------------------------------------------------------ wrapping

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], name: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        limit = self.limits.get(name, self.default_limit)
        deserialize = handler.request_deserializer
        request_streaming = handler.request_streaming
        streaming = handler.request_streaming or handler.response_streaming
        behavior = (
            handler.stream_stream
            or handler.unary_stream
            or handler.stream_unary
            or handler.unary_unary
        )
        assert behavior is not None, f"method {name} has no behavior"
        inner: Callable[..., Any] = behavior

        def request_of(raw_iter: Iterator[bytes], call: GuardedCall) -> Any:
            if request_streaming:
                return self._each(raw_iter, limit, deserialize, call)
            return self._first(raw_iter, limit, deserialize)

        def unary_response(raw_iter: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            try:
                call = self._admit(context, name, streaming)
            except Exception as exc:
                self.abort(context, exc)
            try:
                with _bound(call):
                    try:
                        request = request_of(raw_iter, call)
                    except Exception as exc:
                        self.abort(context, exc)
                    return inner(request, context)
            finally:
                call.release()

        def stream_response(
            raw_iter: Iterator[bytes], context: grpc.ServicerContext
        ) -> Iterator[Any]:
            try:
                call = self._admit(context, name, streaming)
            except Exception as exc:
                self.abort(context, exc)
            try:
                with _bound(call):
                    try:
                        request = request_of(raw_iter, call)
                    except Exception as exc:
                        self.abort(context, exc)
                    yield from inner(request, context)
            finally:
                call.release()

        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                stream_response, response_serializer=handler.response_serializer
            )
        return grpc.stream_unary_rpc_method_handler(
            unary_response, response_serializer=handler.response_serializer
        )

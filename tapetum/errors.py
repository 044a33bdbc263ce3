"""Typed errors. Each carries a message a user can act on; the CLI prints it as one line.

Every error Tapetum raises on purpose is defined here and derives from
:class:`TapetumError`, so ``except TapetumError`` catches all of them and nothing else.
Messages speak of parameters (``arch``, ``split``), never of command-line flags: the CLI
and the servers are only two of the callers.

The tree:

* TapetumError
  + ConfigError (also a ValueError)
    - RateLimitStorageError
    - LabelMapError
    - ExperimentSpecError
  + MissingDependencyError
  + ModelLoadError
    - ClassifierError
  + SourceError
    - SourceNotAllowedError
  + SinkError
  + DatasetError
  + CircuitOpenError
  + QueueClosed
  + BatcherClosedError (also a RuntimeError)
  + BatcherFullError (also a RuntimeError)
  + StreamLimitError
  + UnknownStreamError
  + SubscriptionLimitError
  + KeyStoreError
    - KeyDatabaseNotFoundError
    - UnknownKeyError
  + RateLimitUnavailableError
  + ImageError
  + RemoteBackendError
  + ApiError
    - NotReadyError
  + RegistryError
    - RegistryUnavailableError
    - ModelNotFoundError
    - ArtifactError
      * ArtifactMissingError
      * ArtifactCorruptError
    - AliasConflictError
  + ExperimentError
  + MonitorError
    - DriftProfileError
    - MetricsServerError

The servers map these to statuses at their edge (``tapetum.serve.rest.errors``, the gRPC
servicer): an :class:`ApiError` or :class:`ImageError` carries its own, a
:class:`ConfigError` is 422, any other Tapetum error 503.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AliasConflictError",
    "ApiError",
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactMissingError",
    "BatcherClosedError",
    "BatcherFullError",
    "CircuitOpenError",
    "ClassifierError",
    "ConfigError",
    "DatasetError",
    "DriftProfileError",
    "ExperimentError",
    "ExperimentSpecError",
    "ImageError",
    "KeyDatabaseNotFoundError",
    "KeyStoreError",
    "LabelMapError",
    "MetricsServerError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelNotFoundError",
    "MonitorError",
    "NotReadyError",
    "QueueClosed",
    "RateLimitStorageError",
    "RateLimitUnavailableError",
    "RegistryError",
    "RegistryUnavailableError",
    "RemoteBackendError",
    "SinkError",
    "SourceError",
    "SourceNotAllowedError",
    "StreamLimitError",
    "SubscriptionLimitError",
    "TapetumError",
    "UnknownKeyError",
    "UnknownStreamError",
]


class TapetumError(Exception):
    """Base class for every error Tapetum raises on purpose."""


# ------------------------------------------------------------------ configuration, setup


class ConfigError(TapetumError, ValueError):
    """A configuration value is invalid (bad threshold, unknown option, wrong input size).

    Also a :class:`ValueError`, so code written for libraries that raise ``ValueError`` on
    a bad argument (supervision, trackers) still catches it.
    """


class RateLimitStorageError(ConfigError):
    """The rate-limit storage URI is invalid, unsupported, or its server cannot be reached."""


class LabelMapError(ConfigError):
    """A label map (YAML/JSON grouping a classifier's classes into the user's labels) is
    malformed or names classes the classifier does not have (the message lists them, with
    the closest names it does have)."""


class ExperimentSpecError(ConfigError):
    """An A/B experiment file is refused before any frame is read: it does not validate
    (the message names the file and the field), names a model that does not exist, gives
    canary shares that overlap, or has a variant whose classes differ from the control's."""


class MissingDependencyError(TapetumError):
    """An optional dependency is not installed; the message names the extra to install."""


# -------------------------------------------------------------------------- data path


class ModelLoadError(TapetumError):
    """A model file is missing, unreadable, or not of a layout the adapter understands."""


class ClassifierError(ModelLoadError):
    """A model is not a usable image classifier: its output is not one score vector per
    image, or its class names do not match its output width."""


class SourceError(TapetumError):
    """A source cannot be opened or read (missing file, unreachable stream, no video track)."""


class SourceNotAllowedError(SourceError):
    """A server's source policy refuses a URI before anything is opened: a local path
    outside its media roots, a scheme it does not allow, or a host that resolves to a
    loopback, private, link-local, multicast or cloud-metadata address not allow-listed.
    The message is safe to show a client; ``reason`` is for the server log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SinkError(TapetumError):
    """A sink cannot be opened or written (unwritable path, unsupported codec)."""


class DatasetError(TapetumError):
    """A labelled data set cannot be read: missing folder or file, malformed annotation JSON or
    label line (the message names the file and line), classes that do not match the model."""


class CircuitOpenError(TapetumError):
    """A call was refused because its breaker is open (or its half-open trials are taken).

    Attributes:
        name: the breaker's name.
        retry_after_s: seconds until the breaker lets a trial call through.
        reason: the last failure that opened it.
    """

    def __init__(self, name: str, retry_after_s: float, reason: str) -> None:
        self.name = name
        self.retry_after_s = retry_after_s
        self.reason = reason
        super().__init__(
            f"circuit {name!r} is open after repeated failures (last: {reason}); "
            f"retry in {retry_after_s:.1f} s"
        )


class QueueClosed(TapetumError):  # noqa: N818 - a signal, like queue.Empty
    """Raised by :meth:`~tapetum.pipeline.queues.BoundedQueue.get` once the queue is closed
    and empty."""


class BatcherClosedError(TapetumError, RuntimeError):
    """The batcher was closed: no new items, and pending ones it will not run."""


class BatcherFullError(TapetumError, RuntimeError):
    """The queue stayed full for the whole submit timeout (the model cannot keep up)."""


# --------------------------------------------------------------------------- services


class StreamLimitError(TapetumError):
    """The server already runs its maximum number of streams."""


class UnknownStreamError(TapetumError):
    """No stream has this id (never started, or stopped and removed), or it is another
    principal's."""


class SubscriptionLimitError(TapetumError):
    """The caller already follows as many streams' live results as it may."""


class KeyStoreError(TapetumError):
    """The key database cannot be opened, read or written (bad path, corrupt file)."""


class KeyDatabaseNotFoundError(KeyStoreError):
    """The key database file does not exist (list and revoke never create one)."""


class UnknownKeyError(KeyStoreError):
    """No active API key has the given id."""


class RateLimitUnavailableError(TapetumError):
    """The rate-limit storage failed during a request (only raised with ``fail_open=False``)."""


class ImageError(TapetumError):
    """An upload is not an image we accept. ``status`` is the HTTP status it maps to,
    ``code`` a stable machine-readable reason."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class RemoteBackendError(TapetumError):
    """A call to the upstream node failed: it did not answer (``transient``: nothing
    listening, connection lost, deadline missed; a breaker failure) or it refused the call
    (a bad key, a rejected image, an unknown model; the node is up).

    Attributes:
        target: the node's address.
        status: the gRPC status name, e.g. ``"UNAUTHENTICATED"``.
        error_code: the node's REST error code (``tapetum-error-code``), if it sent one.
        transient: the node did not answer (a breaker failure) rather than refused the call.
    """

    #: Outcomes that say the node is unreachable or too slow: breaker failures.
    TRANSIENT_STATUSES: ClassVar[frozenset[str]] = frozenset(
        {"DEADLINE_EXCEEDED", "UNAVAILABLE", "CONNECTION"}
    )

    def __init__(self, target: str, status: str, detail: str, error_code: str | None) -> None:
        self.target = target
        self.status = status
        self.error_code = error_code
        self.transient = status in self.TRANSIENT_STATUSES
        suffix = f", {error_code}" if error_code else ""
        what = "did not answer" if self.transient else "refused the call"
        super().__init__(f"inference node {target} {what} ({status}{suffix}): {detail}")


class ApiError(TapetumError):
    """A client-visible error: HTTP status, stable code, reason, extra headers.

    Framework-free: the REST app renders it as a JSON body, the gRPC server maps the status
    to a gRPC code and puts ``code`` in the trailing metadata.
    """

    def __init__(
        self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})


class NotReadyError(ApiError):
    """The model is still loading (``failed`` False) or failed to load (True): 503."""

    def __init__(self, detail: str, *, failed: bool = False) -> None:
        super().__init__(503, "not_ready", detail, {"Retry-After": "1"})
        self.failed = failed


class RegistryError(TapetumError):
    """The model registry cannot do what was asked (the subclasses say why)."""


class RegistryUnavailableError(RegistryError):
    """The registry store or tracking server cannot be reached or opened (the message names
    the URI, password redacted, and the cause)."""


class ModelNotFoundError(RegistryError):
    """No registered model, version or alias of that name (the message lists what exists)."""


class ArtifactError(RegistryError):
    """A registered version's model file cannot be used."""


class ArtifactMissingError(ArtifactError):
    """The version's artifact is not in the artifact store (deleted, or another root)."""


class ArtifactCorruptError(ArtifactError):
    """The artifact's sha256 differs from the one recorded when it was registered."""


class AliasConflictError(RegistryError):
    """A concurrent promotion or rollback of the same alias won; the alias follows it and
    the losing change is kept in the alias history."""


class ExperimentError(TapetumError):
    """An A/B experiment's results cannot be read or acted on: a run folder without
    experiment data or with data of another format version, or a decision that cannot be
    applied through the registry (a variant that is a file, not a registered version)."""


class MonitorError(TapetumError):
    """Monitoring cannot do what was asked (the subclasses say why)."""


class DriftProfileError(MonitorError):
    """A drift reference profile is missing, unreadable, not a profile, of another version,
    or has a field that does not validate (the message names the file and the field); or a
    profile cannot be built (no frames were read)."""


class MetricsServerError(MonitorError):
    """The metrics and dashboard server cannot listen where asked (the port is taken, the
    address is not this machine's, or a port out of range)."""

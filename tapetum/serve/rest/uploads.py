"""Reading image uploads within their byte limits: a raw body with its Content-Type, or
multipart ``file`` / ``files`` parts. A declared Content-Length over the limit is refused
before anything is read; a chunked body is refused with 413 as soon as it passes it."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from tapetum.serve.images import normalize_content_type
from tapetum.serve.settings import ApiError, ServeSettings

__all__ = ["read_batch_upload", "read_body_limited", "read_single_upload", "upload_body_limits"]

# Multipart framing around the files: generous, the byte limits are per file.
_MULTIPART_OVERHEAD_BYTES = 64 * 1024


def _single_body_limit(limit: int) -> int:
    return limit + _MULTIPART_OVERHEAD_BYTES


def _batch_body_limit(limit: int, max_batch: int) -> int:
    return (limit + 1024) * max_batch + _MULTIPART_OVERHEAD_BYTES


def upload_body_limits(settings: ServeSettings) -> dict[str, int]:
    """Whole-body caps of the upload routes (for
    :class:`~tapetum.serve.middleware.BodyLimitMiddleware`), bytes."""
    return {
        "/v1/detect": _single_body_limit(settings.max_upload_bytes),
        "/v1/detect/batch": _batch_body_limit(settings.max_upload_bytes, settings.max_batch),
    }


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise ApiError(400, "bad_request", "Content-Length is not a number") from None
    if length > limit:
        raise ApiError(
            413, "payload_too_large", f"the body is {length} bytes; the limit is {limit} bytes"
        )


async def read_body_limited(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` (chunked bodies too)."""
    _check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_file_part(part: UploadFile, limit: int, name: str) -> tuple[bytes, str]:
    data = await part.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "image_too_large", f"{name} is over the limit of {limit} bytes")
    return data, part.content_type or ""


async def read_single_upload(request: Request, limit: int) -> tuple[bytes, str]:
    """One image: the raw body, or the multipart ``file`` part; (bytes, content type)."""
    ctype = normalize_content_type(request.headers.get("content-type"))
    if ctype != "multipart/form-data":
        return await read_body_limited(request, limit), ctype
    _check_declared_length(request, _single_body_limit(limit))
    form = await request.form(max_files=1, max_fields=16)
    part = form.get("file")
    if not isinstance(part, UploadFile):
        raise ApiError(422, "missing_file", "the multipart body needs a 'file' part")
    return await _read_file_part(part, limit, "file")


async def read_batch_upload(
    request: Request, limit: int, max_batch: int
) -> list[tuple[bytes, str]]:
    """Up to ``max_batch`` images from multipart ``files`` parts, each within ``limit``."""
    ctype = normalize_content_type(request.headers.get("content-type"))
    if ctype != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "the batch route takes multipart/form-data with 'files' parts, "
            f"not {ctype or '(none)'}",
        )
    _check_declared_length(request, _batch_body_limit(limit, max_batch))
    # One more file than allowed parses, so the over-limit case gets our clear message.
    form = await request.form(max_files=max_batch + 1, max_fields=16)
    parts = [p for p in form.getlist("files") if isinstance(p, UploadFile)]
    if not parts:
        raise ApiError(422, "missing_file", "the multipart body needs one or more 'files' parts")
    if len(parts) > max_batch:
        raise ApiError(413, "batch_too_large", f"a batch takes at most {max_batch} files")
    return [await _read_file_part(p, limit, f"files[{i}]") for i, p in enumerate(parts)]

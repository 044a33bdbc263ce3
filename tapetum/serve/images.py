"""Safe decoding of uploaded images.

Checks run cheapest first, so a hostile upload costs as little as possible:

1. the declared content type (415 when not an image type we decode),
2. the byte count (413 above ``max_bytes``; 400 when empty),
3. the pixel size read from the file *header* only — Pillow's ``Image.open`` is lazy and
   parses the header without decoding pixels — so a decompression bomb (a few KB of PNG
   claiming 100000x100000) is refused before any pixel buffer is allocated (413),
4. the actual format sniffed from the bytes must match the declared type (415),
5. the full decode; a truncated or corrupt file is refused (422) rather than returned
   half-grey, which is what OpenCV's ``imdecode`` does with a cut JPEG.

The decode itself takes a fast path where completeness can be checked cheaply: an 8-bit
grey/RGB JPEG that ends in its EOI marker (``FF D9``; the entropy-coded data cannot contain
it, so a cut file does not end in it), or a grey/RGB/RGBA PNG that ends in its ``IEND``
chunk, is decoded by OpenCV's ``imdecode`` (libjpeg-turbo/libpng, BGR directly, EXIF
orientation ignored as Pillow does), and the result must have the header's size. Anything
else — WebP, BMP, other modes, a file without its end marker, or one OpenCV refuses — goes
through Pillow's full decode, which raises on truncation and gives the reason.

Example:
    >>> from pathlib import Path
    >>> data = Path("bus.jpg").read_bytes()                       # doctest: +SKIP
    >>> decode_image(data, "image/jpeg").shape                    # doctest: +SKIP
    (1080, 810, 3)
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapetum.errors import ImageError

log = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_CONTENT_TYPES",
    "ImageError",
    "ImageLimits",
    "decode_image",
    "normalize_content_type",
]

#: Content type → Pillow format name it must sniff as.
ALLOWED_CONTENT_TYPES: dict[str, str] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
}
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-ms-bmp": "image/bmp"}


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What an upload may be.

    Attributes:
        max_bytes: encoded size limit in bytes (default 10 MiB).
        max_side_px: limit on width and on height in pixels.
        max_pixels: limit on width × height (default 40 MP).
    """

    max_bytes: int = 10 * 1024 * 1024
    max_side_px: int = 8192
    max_pixels: int = 40_000_000


def normalize_content_type(content_type: str | None) -> str:
    """``"Image/JPEG; charset=x"`` → ``"image/jpeg"``; aliases map to their canonical type."""
    if not content_type:
        return ""
    base = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def decode_image(
    data: bytes, content_type: str | None, limits: ImageLimits | None = None
) -> npt.NDArray[np.uint8]:
    """Decode an uploaded image to a (H, W, 3) BGR uint8 array, after the checks above.

    Args:
        data: the encoded file.
        content_type: the declared media type (request ``Content-Type`` or multipart part).
        limits: size limits (defaults: 10 MiB, 8192 px a side, 40 MP).

    Raises:
        ImageError: with ``status`` 400 (empty), 413 (too many bytes or pixels),
            415 (not an accepted type, or bytes of another format) or 422 (corrupt or
            truncated).
    """
    from PIL import Image

    lim = limits or ImageLimits()
    ctype = normalize_content_type(content_type)
    expected_format = ALLOWED_CONTENT_TYPES.get(ctype)
    if expected_format is None:
        accepted = ", ".join(ALLOWED_CONTENT_TYPES)
        raise ImageError(
            f"content type {ctype or '(none)'!r} is not an accepted image type ({accepted})",
            status=415,
            code="unsupported_media_type",
        )
    if not data:
        raise ImageError("the image is empty (0 bytes)", status=400, code="empty_image")
    if len(data) > lim.max_bytes:
        raise ImageError(
            f"the image is {len(data)} bytes; the limit is {lim.max_bytes} bytes",
            status=413,
            code="image_too_large",
        )
    try:
        # Pillow's own bomb guard warns at MAX_IMAGE_PIXELS and raises at twice that; our
        # limit is checked explicitly below, so silence the warning and let the error
        # (a still bigger header) fall through to the same 413.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # lazy: header only
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels_error(None, lim) from exc
    except Exception as exc:
        # UnidentifiedImageError, OSError, ValueError, SyntaxError from Pillow's parsers;
        # anything else (a third-party plugin or patch failing on hostile bytes, a plugin
        # whose module is missing) is still the upload's fault, never a 500, and its text
        # (module names, internals) stays in the server log.
        if isinstance(exc, _PARSE_ERRORS):
            reason = _first_line(exc)
        else:
            log.warning("image decoder failed on an upload: %s: %s", type(exc).__name__, exc)
            reason = "no image decoder recognised it"
        raise ImageError(
            f"the bytes are not a readable {ctype} image ({reason})",
            status=422,
            code="corrupt_image",
        ) from exc
    with img:
        width, height = img.size
        if width > lim.max_side_px or height > lim.max_side_px or width * height > lim.max_pixels:
            raise _too_many_pixels_error((width, height), lim)
        if width <= 0 or height <= 0:
            raise ImageError(
                f"the image header gives a size of {width}x{height}",
                status=422,
                code="corrupt_image",
            )
        if img.format != expected_format:
            raise ImageError(
                f"declared {ctype} but the bytes are {img.format or 'unknown'}",
                status=415,
                code="content_type_mismatch",
            )
        if _complete_for_fast_path(data, expected_format, img.mode):
            fast = _cv2_decode(data, width, height)
            if fast is not None:
                return fast
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img.load()  # full decode; raises on truncation (LOAD_TRUNCATED_IMAGES off)
                rgb = img.convert("RGB")
        except Image.DecompressionBombError as exc:
            raise _too_many_pixels_error((width, height), lim) from exc
        except _PARSE_ERRORS as exc:
            raise ImageError(
                f"the {ctype} image is corrupt or truncated ({_first_line(exc)})",
                status=422,
                code="corrupt_image",
            ) from exc
    # RGB → BGR, the layout every detector in Tapetum takes; one contiguous copy.
    bgr: npt.NDArray[np.uint8] = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])
    return bgr


#: Pillow modes (per format) whose ``convert("RGB")`` OpenCV's IMREAD_COLOR reproduces.
_FAST_MODES: dict[str, frozenset[str]] = {
    "JPEG": frozenset({"L", "RGB"}),
    "PNG": frozenset({"L", "RGB", "RGBA"}),
}
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _complete_for_fast_path(data: bytes, fmt: str, mode: str) -> bool:
    """Whether ``data`` (already sniffed as ``fmt``) visibly ends where its format ends.

    JPEG: the last bytes (trailing NUL padding aside) are the EOI marker ``FF D9``, which
    entropy-coded data never contains (``FF`` there is always stuffed with ``00`` or is a
    restart marker). PNG: the file ends with the fixed 12-byte ``IEND`` chunk.
    """
    if mode not in _FAST_MODES.get(fmt, ()):
        return False
    if fmt == "JPEG":
        return data.rstrip(b"\x00").endswith(b"\xff\xd9")
    return data.endswith(_PNG_IEND)


def _cv2_decode(data: bytes, width: int, height: int) -> npt.NDArray[np.uint8] | None:
    """OpenCV decode to (H, W, 3) BGR uint8, or None when it fails or disagrees with the
    header's size (the caller then decodes with Pillow, which gives the reason)."""
    import cv2

    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        out = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None
    if (
        out is None
        or out.dtype != np.uint8
        or out.ndim != 3
        or out.shape != (height, width, 3)
        or not out.flags.c_contiguous
    ):
        return None
    return np.asarray(out, dtype=np.uint8)  # already uint8 and contiguous: no copy


def _too_many_pixels_error(size: tuple[int, int] | None, lim: ImageLimits) -> ImageError:
    what = f"{size[0]}x{size[1]} pixels" if size else "larger than the pixel limit"
    return ImageError(
        f"the image is {what}; the limit is {lim.max_side_px}x{lim.max_side_px} "
        f"and {lim.max_pixels / 1e6:g} MP",
        status=413,
        code="image_too_large",
    )


#: what Pillow's parsers raise on bad bytes; their first line is the reason a client gets.
_PARSE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)

#: an object's default repr (``<_io.BytesIO object at 0x7f…>``): a heap address, which a
#: client has no use for and should not learn.
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _first_line(exc: BaseException) -> str:
    """The error's first line for the client, without object reprs (Pillow names the
    buffer it read: "cannot identify image file <_io.BytesIO object at 0x…>")."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    return _OBJECT_REPR.sub("the upload", text[0])

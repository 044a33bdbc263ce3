"""Where frames come from: video files, live network streams, folders of images.

``open_source`` picks the right class for a URI::

    import threading
    from tapetum.sources import open_source

    source = open_source("rtsp://10.0.0.7:554/Streaming/101", reconnect_max_attempts=20)
    for frame in source.frames(threading.Event()):
        ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tapetum.errors import SourceError
from tapetum.sources.base import Source, SourceStats
from tapetum.sources.images import ImageFolderSource
from tapetum.sources.video import (
    LIVE_SCHEMES,
    VideoSource,
    default_source_id,
    display_url,
    redact_url,
    url_scheme,
)

__all__ = [
    "LIVE_SCHEMES",
    "ImageFolderSource",
    "Source",
    "SourceStats",
    "VideoSource",
    "default_source_id",
    "display_url",
    "open_source",
    "redact_url",
    "url_scheme",
]


def open_source(
    uri: str, *, source_id: str | None = None, realtime: bool = False, **options: Any
) -> Source:
    """Open ``uri`` as the matching source.

    A URL with a scheme in ``LIVE_SCHEMES`` becomes a live ``VideoSource``, a directory an
    ``ImageFolderSource``, any other existing path a ``VideoSource`` of a file. ``options``
    go to that class's constructor (e.g. ``reconnect_max_attempts``, ``fps``).

    Raises:
        SourceError: the path does not exist, the URL scheme is not supported, or the
            source cannot be opened (not a video, no video stream, unreachable URL).
    """
    scheme = url_scheme(uri)
    if scheme is not None:
        if scheme not in LIVE_SCHEMES:
            supported = ", ".join(sorted(LIVE_SCHEMES))
            raise SourceError(
                f"cannot open {display_url(uri)}: unsupported URL scheme '{scheme}' "
                f"(supported: {supported}, or a file or folder path)"
            )
        return VideoSource(uri, source_id=source_id, realtime=realtime, **options)
    path = Path(uri)
    if path.is_dir():
        return ImageFolderSource(path, source_id=source_id, realtime=realtime, **options)
    if path.is_file():
        return VideoSource(uri, source_id=source_id, realtime=realtime, **options)
    raise SourceError(f"cannot open source {uri}: no such file or directory")

"""Content hashes and the local, content-addressed cache of model files.

A registered version records its file's sha256; a resolved model is served from
``<cache>/sha256/<first two hex>/<sha256>.onnx``, and the file is hashed again on every load
(a flipped bit on disk is caught before a session opens it). A file that fails the check is
removed and fetched again; one that arrives with the wrong hash is an
:class:`~tapetum.errors.ArtifactCorruptError`.

Downloads land in a temporary folder inside the cache and are renamed into place only
after their hash checks out, so a process killed mid-download leaves no half file under
a final name, and two processes fetching the same model at once both end with a good one.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = Path(tempfile.mkdtemp())
    >>> (tmp / "m.onnx").write_bytes(b"model bytes")
    11
    >>> digest = sha256_file(tmp / "m.onnx")
    >>> cache = ArtifactCache(tmp / "cache")
    >>> cache.get(digest) is None
    True
    >>> cache.fetch(digest, lambda folder: tmp / "m.onnx").name == digest + ".onnx"
    True
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tapetum.errors import ArtifactCorruptError, ArtifactMissingError, ConfigError

__all__ = ["ArtifactCache", "content_digest", "sha256_file"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20

#: ``download(folder) -> path``: fetch the artifact into ``folder`` and return the file (a
#: file elsewhere is copied, not moved).
Downloader = Callable[[Path], Path]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
        return
    yield from sorted(p for p in path.rglob("*") if p.is_file())


def content_digest(paths: Sequence[str | Path]) -> tuple[str, int]:
    """(hex sha256, file count) over the contents of ``paths`` (files or folders).

    Each file contributes its path relative to the argument it was found under, then its
    own sha256, in sorted order: renaming the parent folder keeps the digest, changing,
    adding or removing a file changes it.

    Raises:
        ConfigError: a path that does not exist.
    """
    digest = hashlib.sha256()
    count = 0
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise ConfigError(f"data path not found: {root}")
        for file in _files_under(root):
            rel = file.name if file == root else file.relative_to(root).as_posix()
            digest.update(rel.encode() + b"\0" + sha256_file(file).encode() + b"\n")
            count += 1
    return digest.hexdigest(), count


class ArtifactCache:
    """Model files by sha256 under ``root`` (created on first use).

    Args:
        root: the cache folder (see :func:`~tapetum.registry.settings.model_cache_dir`).
        suffix: file suffix of cached files.
    """

    def __init__(self, root: str | Path, suffix: str = ".onnx") -> None:
        self.root = Path(root)
        self.suffix = suffix

    def path_for(self, sha256: str) -> Path:
        """Where the file of ``sha256`` lives in the cache (whether or not it is there)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ArtifactCorruptError(f"not a sha256 digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / f"{sha256}{self.suffix}"

    def get(self, sha256: str) -> Path | None:
        """The cached file of ``sha256`` after checking its hash; None when absent. A cached
        file whose hash no longer matches is deleted (and None returned)."""
        path = self.path_for(sha256)
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            return None
        if actual == sha256:
            return path
        log.warning("cached model %s is corrupt (sha256 %s); fetching it again", path, actual)
        path.unlink(missing_ok=True)
        return None

    def fetch(self, sha256: str, download: Downloader) -> Path:
        """The cached file of ``sha256``, downloading it with ``download`` when absent.

        Raises:
            ArtifactCorruptError: the downloaded file's sha256 differs.
            ArtifactMissingError: ``download`` returned no file.
        """
        cached = self.get(sha256)
        if cached is not None:
            return cached
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".fetch-") as tmp:
            fetched = download(Path(tmp))
            if not fetched.is_file():
                raise ArtifactMissingError(f"the artifact store returned no file for {sha256}")
            staged = Path(tmp) / f"staged{self.suffix}"
            if fetched.resolve().is_relative_to(Path(tmp).resolve()):
                fetched.rename(staged)
            else:  # a file the downloader did not put in the folder: never move it away
                shutil.copyfile(fetched, staged)
            actual = sha256_file(staged)
            if actual != sha256:
                raise ArtifactCorruptError(
                    f"artifact sha256 mismatch: registered {sha256}, downloaded {actual} "
                    f"({fetched.name}); the stored file was changed after registration"
                )
            os.replace(staged, final)  # atomic: readers see no file or the whole file
        return final

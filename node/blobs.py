"""The content-addressed blob store: checkpoints, datasets and proofs, named by SHA-256.

A blob is written once and never changed: `put` streams the body to a temporary file
while hashing it, refuses it unless its digest is the one claimed (and, for a
safetensors blob, unless its header checks out), then renames it into place, so a
reader never sees a partial file. Files live at `root/ab/cdef…`: the first two hex
digits of the digest name one of 256 directories, which spreads the blobs evenly.

Several processes may share one root (gateway workers, a provider agent): two writers
of the same blob both succeed, the second rename replacing the first with the same bytes.
A crash can leave a file in `root/tmp/`; it is never read, and `remove_stale_temporaries`
clears old ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Protocol

from node.safetensors_format import InvalidSafetensors, check_safetensors

_DIGEST = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
chunk_bytes = 1024 * 1024
DEFAULT_BLOB_BYTES_MAX = 256 * 1024 * 1024
temporary_seconds_max = 24 * 3600


class MediaType(StrEnum):
    """What a blob claims to be; a safetensors blob must pass the header check."""

    OCTET_STREAM = "application/octet-stream"
    SAFETENSORS = "application/vnd.safetensors"


class BlobError(Exception):
    """Root of every error the blob store raises on purpose."""


class InvalidDigest(BlobError, ValueError):
    """A blob name that is not a SHA-256 digest in hex."""

    def __init__(self, value: str) -> None:
        super().__init__(f"{value!r} is not a SHA-256 digest (64 hex digits, 0x optional)")
        self.value = value


class BlobNotFound(BlobError, LookupError):
    def __init__(self, digest: str) -> None:
        super().__init__(f"no blob 0x{digest}")
        self.digest = digest


class BlobTooLarge(BlobError, ValueError):
    def __init__(self, bytes_max: int) -> None:
        super().__init__(f"the blob is larger than the {bytes_max}-byte limit")
        self.bytes_max = bytes_max


class DigestMismatch(BlobError, ValueError):
    """The body does not hash to the digest it was sent under."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"the body hashes to 0x{actual}, not to the named 0x{expected}")
        self.expected = expected
        self.actual = actual


class InvalidBlob(BlobError, ValueError):
    """The body is not what its media type says (a malformed safetensors file)."""

    def __init__(self, media_type: str, reason: str) -> None:
        super().__init__(f"not a valid {media_type} body: {reason}")
        self.media_type = media_type
        self.reason = reason


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StoredBlob:
    digest: str  # 64 lowercase hex digits, without 0x
    size: int
    created: bool  # False when the blob was already stored


def parse_digest(value: str) -> str:
    """The 64 lowercase hex digits of a digest written with or without 0x, in any case."""
    match = _DIGEST.fullmatch(value)
    if match is None:
        raise InvalidDigest(value)
    return match.group(1).lower()


class BlobStore:
    """Blobs under `root`, each at most `blob_bytes_max` bytes."""

    def __init__(self, root: Path, blob_bytes_max: int = DEFAULT_BLOB_BYTES_MAX) -> None:
        if blob_bytes_max <= 0:
            raise ValueError(f"blob_bytes_max must be positive, got {blob_bytes_max}")
        self.root = root
        self.blob_bytes_max = blob_bytes_max
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob named `digest` lives (whether or not it exists)."""
        hex_digest = parse_digest(digest)
        return self.root / hex_digest[:2] / hex_digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(parse_digest(digest)) from None

    def open(self, digest: str) -> IO[bytes]:
        """The blob for reading (the caller closes it); BlobNotFound if absent."""
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(parse_digest(digest)) from None

    def put(
        self,
        digest: str,
        body: Readable,
        media_type: MediaType = MediaType.OCTET_STREAM,
    ) -> StoredBlob:
        """Store what `body` yields under `digest`, checking it first.

        Reads at most `blob_bytes_max + 1` bytes, in chunks, never the whole body at once.
        Raises DigestMismatch, BlobTooLarge or InvalidBlob and stores nothing when the
        body is not the blob it claims to be; a blob already stored is checked the same
        way and reported with `created=False`.
        """
        expected = parse_digest(digest)
        target = self.path(expected)
        fd, temporary = tempfile.mkstemp(dir=self._tmp, prefix=expected[:16] + "-")
        try:
            with os.fdopen(fd, "w+b") as handle:
                size, actual = self._copy(body, handle)
                if actual != expected:
                    raise DigestMismatch(expected, actual)
                if media_type is MediaType.SAFETENSORS:
                    handle.seek(0)
                    try:
                        check_safetensors(handle, size)
                    except InvalidSafetensors as error:
                        raise InvalidBlob(media_type.value, error.reason) from error
                handle.flush()
                os.fsync(handle.fileno())
            if target.is_file():
                return StoredBlob(expected, size, created=False)
            target.parent.mkdir(exist_ok=True)
            os.replace(temporary, target)
            _fsync_directory(target.parent)
            return StoredBlob(expected, size, created=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def _copy(self, body: Readable, handle: IO[bytes]) -> tuple[int, str]:
        hasher = hashlib.sha256()
        size = 0
        # Each pass reads at most one chunk, and the loop ends once the limit is passed,
        # so an endless body costs at most blob_bytes_max + one chunk.
        while True:
            chunk = body.read(chunk_bytes)
            if not chunk:
                return size, hasher.hexdigest()
            size += len(chunk)
            if size > self.blob_bytes_max:
                raise BlobTooLarge(self.blob_bytes_max)
            hasher.update(chunk)
            handle.write(chunk)

    def remove_stale_temporaries(self, now: float | None = None) -> int:
        """Delete temporary files older than a day (left by a crash); return how many."""
        cutoff = (time.time() if now is None else now) - temporary_seconds_max
        removed = 0
        for entry in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
        return removed


def _fsync_directory(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

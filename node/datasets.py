"""Content-addressed training datasets: two arrays in one safetensors file, named by a manifest.

A dataset is `x` (float32, [examples, features]) and `y` (int32 class labels in
0 … classes - 1, [examples]), stored as the safetensors file `data.safetensors` beside
`manifest.json`, the canonical JSON of `Manifest` (normative text: specs/datasets.md).
The manifest names the data file by its SHA-256 and size, so the SHA-256 of the manifest
bytes names the whole dataset: that digest is a job spec's `dataset.sha256`, and it is
also the manifest's name in the blob store, so a dataset is fetched by its id alone.

A dataset file is untrusted input (a provider, a gateway or a disk may hand over anything):
`load_dataset` checks the manifest digest, the manifest's fields, the file's size and
digest, its safetensors header, the tensors' names, dtypes and shapes, and every label and
feature before it returns the arrays, and reads the arrays itself from the checked header;
nothing is unpickled. Every refusal is a narrow subclass of `DatasetError`.

Two builders make datasets from nothing but their arguments: `build_digits` (scikit-learn's
bundled handwritten digits, real data with no download) and `build_synthetic` (Gaussian-like
class clusters from a seeded PCG64 stream, computed in integers, so the same arguments give
the same bytes on every machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save_file

from node.blobs import BlobStore, MediaType
from node.client import OCTET_STREAM, SAFETENSORS, GatewayClient, GatewayError
from node.safetensors_format import (
    InvalidSafetensors,
    SafetensorsHeader,
    check_safetensors,
    header_bytes_max,
)
from protocol import canonical
from protocol.errors import InvalidInput

Float32Array = npt.NDArray[np.float32]
Int32Array = npt.NDArray[np.int32]
T = TypeVar("T")

FORMAT_VERSION = "1"
MANIFEST_FILE = "manifest.json"
DATA_FILE = "data.safetensors"

# Limits (specs/datasets.md, "Limits"). The arrays are loaded whole into memory, so a
# data file is bounded by what one training node holds; the manifest is a few hundred bytes.
manifest_bytes_max = 8 * 1024
file_bytes_max = 16 * 1024**3
examples_max = 2**32  # as the job spec's dataset.examples
features_max = 65_536  # as the job spec's dataset.features
classes_max = 65_536  # as the job spec's dataset.classes
name_chars_max = 64
source_chars_max = 1024
seed_max = 2**64 - 1
# The synthetic generator keeps every class centre in memory: classes * features of them.
synthetic_centres_max = 2**24
chunk_bytes = 1024 * 1024
# Bytes of raw PCG64 output the synthetic generator draws at once: bounds its scratch memory
# (a few times this) whatever the dataset's size.
synthetic_chunk_bytes = 4 * 1024 * 1024

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_DATASET_ID = re.compile(r"0x([0-9a-fA-F]{64})")
_SHA256_TEXT = re.compile(r"0x[0-9a-f]{64}")
_LENGTH_BYTES = 8  # safetensors' little-endian u64 header length
_ITEM_BYTES = 4  # float32 features and int32 labels alike
# The on-disk dtypes: safetensors data is little-endian whatever the machine.
_FILE_DTYPES = {"x": ("F32", np.dtype("<f4")), "y": ("I32", np.dtype("<i4"))}


# -- errors ------------------------------------------------------------------------------


class DatasetError(Exception):
    """Root of every error this module raises on purpose."""


class InvalidDatasetId(DatasetError, ValueError):
    """A dataset id that is not 0x and 64 hex digits."""

    def __init__(self, value: str) -> None:
        super().__init__(f"{value!r} is not a dataset id (0x and 64 hex digits)")
        self.value = value


class InvalidDatasetParameter(DatasetError, ValueError):
    """A builder argument out of its bounds; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DatasetNotFound(DatasetError, LookupError):
    """A manifest or data file that is not where it was looked for."""

    def __init__(self, where: str) -> None:
        super().__init__(f"no dataset file at {where}")
        self.where = where


class ManifestDigestMismatch(DatasetError, ValueError):
    """The manifest does not hash to the dataset id it was asked for by."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"the manifest hashes to {actual}, not to the dataset id {expected}")
        self.expected = expected
        self.actual = actual


class InvalidManifest(DatasetError, ValueError):
    """The manifest is not a version-1 manifest in canonical JSON; `field` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"invalid dataset manifest: {message}")
        self.detail = message
        self.field = field


class DataFileSizeMismatch(DatasetError, ValueError):
    """The data file is not the size the manifest names (a truncated or padded file)."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"the data file holds {actual} bytes, the manifest names {expected}")
        self.expected = expected
        self.actual = actual


class DataFileDigestMismatch(DatasetError, ValueError):
    """The data file does not hash to the digest the manifest names (a tampered file)."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"the data file hashes to {actual}, the manifest names {expected}")
        self.expected = expected
        self.actual = actual


class InvalidDataFile(DatasetError, ValueError):
    """The data file is not a well-formed safetensors file (a pickle, say); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the data file is not a valid safetensors file: {reason}")
        self.reason = reason


class TensorMismatch(DatasetError, ValueError):
    """The safetensors header disagrees with the manifest about a tensor's dtype or shape."""

    def __init__(self, tensor: str, reason: str) -> None:
        super().__init__(f"tensor {tensor!r}: {reason}")
        self.tensor = tensor
        self.reason = reason


class LabelOutOfRange(DatasetError, ValueError):
    """A label outside 0 … classes - 1."""

    def __init__(self, example: int, label: int, classes: int) -> None:
        super().__init__(
            f"example {example} has label {label}, outside 0 … {classes - 1} ({classes} classes)"
        )
        self.example = example
        self.label = label
        self.classes = classes


class NonFiniteFeature(DatasetError, ValueError):
    """A feature that is NaN or infinite: it would poison every gradient it touches."""

    def __init__(self, example: int) -> None:
        super().__init__(f"example {example} has a NaN or infinite feature")
        self.example = example


# -- values ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a dataset is: its shape, its data file's digest and size, and where it came from."""

    name: str
    examples: int
    features: int
    classes: int
    file_sha256: bytes
    file_bytes: int
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "name": self.name,
            "examples": self.examples,
            "features": self.features,
            "classes": self.classes,
            "file": {"sha256": "0x" + self.file_sha256.hex(), "bytes": self.file_bytes},
            "source": self.source,
        }

    def encode(self) -> bytes:
        """The manifest's bytes, as `manifest.json` holds them: canonical JSON."""
        return canonical.encode(self.to_json())

    @property
    def id(self) -> str:
        """The dataset id: 0x and the SHA-256 of the canonical manifest, in lowercase hex."""
        return "0x" + hashlib.sha256(self.encode()).hexdigest()


@dataclass(frozen=True, slots=True, eq=False)
class DatasetArrays:
    """A built dataset before it is saved: its arrays, its class count, name and source."""

    name: str
    source: str
    classes: int
    x: Float32Array
    y: Int32Array


@dataclass(frozen=True, slots=True, eq=False)
class LoadedDataset:
    """A dataset whose every byte was checked against its id; the arrays are the caller's."""

    manifest: Manifest
    x: Float32Array
    y: Int32Array

    @property
    def id(self) -> str:
        return self.manifest.id


@dataclass(frozen=True, slots=True)
class DatasetFiles:
    """Where a dataset's two files are: a dataset directory, or two blobs in a store."""

    manifest: Path
    data: Path

    @classmethod
    def in_directory(cls, directory: Path) -> DatasetFiles:
        return cls(directory / MANIFEST_FILE, directory / DATA_FILE)


def parse_dataset_id(value: str) -> bytes:
    """The 32 bytes of a dataset id written as 0x and 64 hex digits (either case)."""
    match = _DATASET_ID.fullmatch(value)
    if match is None:
        raise InvalidDatasetId(value)
    return bytes.fromhex(match.group(1))


# -- manifest ----------------------------------------------------------------------------

_MANIFEST_FIELDS = ("version", "name", "examples", "features", "classes", "file", "source")


def parse_manifest(raw: bytes) -> Manifest:
    """Check manifest bytes strictly (fields, bounds, canonical form) and return the Manifest."""
    if len(raw) > manifest_bytes_max:
        raise InvalidManifest(f"{len(raw)} bytes, more than {manifest_bytes_max}")
    try:
        data = canonical.decode(raw)
    except (InvalidInput, ValueError, RecursionError) as error:
        raise InvalidManifest(f"not JSON without fractions ({error})") from None
    top = _object(data, "", _MANIFEST_FIELDS)
    if top["version"] != FORMAT_VERSION:
        raise InvalidManifest(f"version must be {FORMAT_VERSION!r}", "version")
    name = _text(top["name"], "name", name_chars_max)
    if not _NAME.fullmatch(name):
        raise InvalidManifest("name: lowercase letters, digits, '.', '_' and '-' only", "name")
    examples = _count(top["examples"], "examples", 1, examples_max)
    features = _count(top["features"], "features", 1, features_max)
    classes = _count(top["classes"], "classes", 2, classes_max)
    file = _object(top["file"], "file", ("sha256", "bytes"))
    digest = file["sha256"]
    if not isinstance(digest, str) or not _SHA256_TEXT.fullmatch(digest):
        raise InvalidManifest("file.sha256: expected 0x and 64 lowercase hex digits", "file.sha256")
    size = _count(file["bytes"], "file.bytes", 1, file_bytes_max)
    # The file is an 8-byte length, a header of at least "{}" and the two tensors' bytes;
    # a size that cannot hold them is refused here, before anything opens the file.
    header = size - _LENGTH_BYTES - _ITEM_BYTES * examples * (features + 1)
    if not 2 <= header <= header_bytes_max:
        raise InvalidManifest(
            f"file.bytes: {size} bytes cannot hold {examples} x {features} float32 features "
            f"and {examples} int32 labels with a header of 2 … {header_bytes_max} bytes",
            "file.bytes",
        )
    source = _text(top["source"], "source", source_chars_max)
    manifest = Manifest(name, examples, features, classes, bytes.fromhex(digest[2:]), size, source)
    # One dataset, one id: a second spelling of the same manifest (key order, spaces,
    # escapes, duplicate keys) would name the same data by another digest.
    if manifest.encode() != raw:
        raise InvalidManifest("not in canonical JSON form (specs/log.md)")
    return manifest


def _object(value: object, path: str, names: tuple[str, ...]) -> dict[str, Any]:
    where = path or "manifest"
    if not isinstance(value, dict):
        raise InvalidManifest(f"{where}: expected an object", path or None)
    for name in names:
        if name not in value:
            field = f"{path}.{name}" if path else name
            raise InvalidManifest(f"{field}: missing", field)
    unknown = sorted(set(value) - set(names))
    if unknown:
        field = f"{path}.{unknown[0]}" if path else unknown[0]
        raise InvalidManifest(f"{field}: unknown field", field)
    return value


def _count(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidManifest(f"{field}: expected an integer", field)
    if not low <= value <= high:
        raise InvalidManifest(f"{field}: {value} is outside [{low}, {high}]", field)
    return value


def _text(value: object, field: str, chars_max: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= chars_max:
        raise InvalidManifest(f"{field}: expected a string of 1 … {chars_max} characters", field)
    if not value.isprintable():
        raise InvalidManifest(f"{field}: control characters are not allowed", field)
    return value


# -- saving ------------------------------------------------------------------------------


def save_dataset(dataset: DatasetArrays, directory: Path) -> Manifest:
    """Write `data.safetensors` and then `manifest.json` into `directory`; the manifest.

    The manifest names the data file by its digest, which exists only once the file is
    written, so the manifest is made here. Both files are written to temporary names,
    flushed to disk and renamed into place, the manifest last: a crash leaves either the
    previous dataset, or a data file its manifest does not name (refused on load), never
    a half-written file that reads as valid.
    """
    x, y = dataset.x, dataset.y
    if x.dtype != np.float32 or y.dtype != np.int32 or x.ndim != 2 or y.shape != x.shape[:1]:
        raise InvalidDatasetParameter(
            "arrays",
            f"expected float32 [n, f] and int32 [n], got {x.dtype} "
            f"{list(x.shape)} and {y.dtype} {list(y.shape)}",
        )
    _check_values(x, y, dataset.classes)
    directory.mkdir(parents=True, exist_ok=True)
    data_temporary = _temporary(directory, ".data-")
    manifest_temporary = _temporary(directory, ".manifest-")
    try:
        save_file({"x": np.ascontiguousarray(x), "y": np.ascontiguousarray(y)}, data_temporary)
        with data_temporary.open("rb") as handle:
            digest = _sha256(handle)
            os.fsync(handle.fileno())
            size = os.fstat(handle.fileno()).st_size
        examples, features = x.shape
        manifest = Manifest(
            dataset.name, examples, features, dataset.classes, digest, size, dataset.source
        )
        raw = manifest.encode()
        try:
            parse_manifest(raw)  # the name, the source and the limits, as a reader checks them
        except InvalidManifest as error:
            raise InvalidDatasetParameter(
                error.field or "manifest", f"the manifest would be refused: {error.detail}"
            ) from error
        with manifest_temporary.open("wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(data_temporary, directory / DATA_FILE)
        os.replace(manifest_temporary, directory / MANIFEST_FILE)
        _fsync_directory(directory)
        return manifest
    finally:
        for path in (data_temporary, manifest_temporary):
            path.unlink(missing_ok=True)


def _temporary(directory: Path, prefix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    os.close(fd)
    return Path(name)


def _fsync_directory(path: Path) -> None:
    # A rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- loading -----------------------------------------------------------------------------


def load_dataset(where: Path | DatasetFiles, expected_id: str) -> LoadedDataset:
    """The dataset named `expected_id`, from a directory or two blob paths, checked first.

    In order: the manifest's SHA-256 is the id; the manifest is a valid canonical version-1
    manifest; the data file has the manifest's size and SHA-256; its safetensors header is
    well formed and holds exactly `x` (F32 [examples, features]) and `y` (I32 [examples]);
    every feature is finite and every label in range. The first failure raises its
    `DatasetError` subclass, and no array is returned unless all pass.
    """
    files = where if isinstance(where, DatasetFiles) else DatasetFiles.in_directory(where)
    expected = parse_dataset_id(expected_id)
    raw = _read_manifest(files.manifest)
    actual = hashlib.sha256(raw).digest()
    if actual != expected:
        raise ManifestDigestMismatch("0x" + expected.hex(), "0x" + actual.hex())
    manifest = parse_manifest(raw)
    x, y = _read_data(files.data, manifest)
    _check_values(x, y, manifest.classes)
    return LoadedDataset(manifest, x, y)


def read_manifest(directory: Path) -> tuple[str, Manifest]:
    """The id and the checked manifest of the dataset in `directory` (the data is not read)."""
    raw = _read_manifest(directory / MANIFEST_FILE)
    return "0x" + hashlib.sha256(raw).hexdigest(), parse_manifest(raw)


def _read_manifest(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(manifest_bytes_max + 1)
    except FileNotFoundError:
        raise DatasetNotFound(str(path)) from None
    if len(raw) > manifest_bytes_max:
        raise InvalidManifest(f"more than {manifest_bytes_max} bytes")
    return raw


def _read_data(path: Path, manifest: Manifest) -> tuple[Float32Array, Int32Array]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DatasetNotFound(str(path)) from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size != manifest.file_bytes:
            raise DataFileSizeMismatch(manifest.file_bytes, size)
        expected = "0x" + manifest.file_sha256.hex()
        first = _sha256(handle)
        if first != manifest.file_sha256:
            raise DataFileDigestMismatch(expected, "0x" + first.hex())
        # Second pass, on the same open file: parse the header and read the tensors,
        # hashing again as it goes, so the arrays returned are the very bytes that were
        # checked even if someone rewrote the file in place between the two passes.
        handle.seek(0)
        hasher = hashlib.sha256()
        head = _read_exactly(handle, _LENGTH_BYTES, hasher, size)
        (length,) = struct.unpack("<Q", head)
        head += _read_exactly(
            handle, min(length, header_bytes_max, size - _LENGTH_BYTES), hasher, size
        )
        try:
            header = check_safetensors(io.BytesIO(head), size)
        except InvalidSafetensors as error:
            raise InvalidDataFile(error.reason) from error
        _check_tensors(header, manifest)
        arrays: dict[str, npt.NDArray[Any]] = {}
        for tensor in header.tensors:  # in data order, which tiles the rest of the file
            array = np.empty(tensor.shape, dtype=_FILE_DTYPES[tensor.name][1])
            _read_into(handle, array, hasher, size)
            arrays[tensor.name] = array
        if hasher.digest() != manifest.file_sha256:
            raise DataFileDigestMismatch(expected, "0x" + hasher.hexdigest())
    # Native byte order for the caller; no copy on a little-endian machine.
    return arrays["x"].astype(np.float32, copy=False), arrays["y"].astype(np.int32, copy=False)


def _check_tensors(header: SafetensorsHeader, manifest: Manifest) -> None:
    if header.metadata:
        raise TensorMismatch("__metadata__", "a dataset file carries no metadata")
    names = sorted(t.name for t in header.tensors)
    if names != ["x", "y"]:
        raise TensorMismatch(
            ",".join(names) or "(none)", "a dataset file holds exactly the tensors x and y"
        )
    shapes = {"x": (manifest.examples, manifest.features), "y": (manifest.examples,)}
    for tensor in header.tensors:
        dtype = _FILE_DTYPES[tensor.name][0]
        if tensor.dtype != dtype:
            raise TensorMismatch(tensor.name, f"dtype {tensor.dtype}, expected {dtype}")
        if tensor.shape != shapes[tensor.name]:
            raise TensorMismatch(
                tensor.name,
                f"shape {list(tensor.shape)}, the manifest says {list(shapes[tensor.name])}",
            )


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def _read_exactly(handle: IO[bytes], count: int, hasher: _Hasher, size: int) -> bytes:
    data = handle.read(count)
    hasher.update(data)
    if len(data) != count:
        # The size was checked on the open file, so only a writer shrinking it gets here.
        raise DataFileSizeMismatch(size, handle.tell())
    return data


def _read_into(
    handle: io.BufferedReader, array: npt.NDArray[Any], hasher: _Hasher, size: int
) -> None:
    view = array.data.cast("B")
    position = 0
    while position < len(view):
        window = view[position : position + chunk_bytes]
        count = handle.readinto(window)
        if not count:
            raise DataFileSizeMismatch(size, handle.tell())
        hasher.update(window[:count])
        position += count


def _check_values(x: Float32Array, y: Int32Array, classes: int) -> None:
    bad = np.flatnonzero((y < 0) | (y >= classes))
    if bad.size:
        raise LabelOutOfRange(int(bad[0]), int(y[bad[0]]), classes)
    # Row blocks of about one chunk, so the check's scratch memory stays bounded.
    rows = max(1, chunk_bytes // max(1, x.shape[1]))
    for start in range(0, x.shape[0], rows):
        finite = np.isfinite(x[start : start + rows]).all(axis=1)
        if not finite.all():
            raise NonFiniteFeature(start + int(np.flatnonzero(~finite)[0]))


def _sha256(handle: IO[bytes]) -> bytes:
    hasher = hashlib.sha256()
    while chunk := handle.read(chunk_bytes):
        hasher.update(chunk)
    return hasher.digest()


# -- builders ----------------------------------------------------------------------------

DIGITS_SOURCE = (
    "scikit-learn load_digits: UCI optical recognition of handwritten digits, "
    "1797 8x8 images of pixel counts 0..16, divided by 16"
)
SYNTHETIC_DOMAIN = b"blacktail/datasets/synthetic/v1"


def build_digits() -> DatasetArrays:
    """scikit-learn's bundled handwritten digits: 1 797 examples, 64 features, 10 classes.

    The pixels are counts 0 … 16; dividing by 16 in float32 is exact, so x holds the
    multiples of 1/16 in [0, 1] and the id does not depend on how a machine rounds.
    """
    # Imported here: scikit-learn takes about a second to import, and only this builder
    # needs it, not every `blacktail` command.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.data)
    labels = np.asarray(bunch.target)
    assert pixels.shape == (1797, 64) and labels.shape == (1797,), "the bundled set changed"
    assert np.array_equal(pixels, np.round(pixels)) and 0 <= pixels.min() <= pixels.max() <= 16
    x = pixels.astype(np.float32) / np.float32(16)
    return DatasetArrays("digits", DIGITS_SOURCE, 10, x, labels.astype(np.int32))


def synthetic_source(seed: int, features: int, classes: int) -> str:
    return f"blacktail synthetic v1: seed={seed} features={features} classes={classes}"


def synthetic_bit_generator(seed: int, features: int, classes: int) -> np.random.PCG64:
    """numpy's PCG64 (XSL-RR 128/64) in the state specs/datasets.md derives from the arguments.

    The state is set directly rather than through a SeedSequence, so another implementation
    needs only the 128-bit LCG and its output function to produce the same words.
    """
    key = hashlib.sha256(
        SYNTHETIC_DOMAIN
        + seed.to_bytes(8, "big")
        + features.to_bytes(4, "big")
        + classes.to_bytes(4, "big")
    ).digest()
    generator = np.random.PCG64()
    generator.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(key[:16], "big"),
            "inc": int.from_bytes(key[16:], "big") | 1,
        },
        "has_uint32": 0,
        "uinteger": 0,
    }
    return generator


def build_synthetic(
    seed: int,
    examples: int,
    features: int,
    classes: int,
    progress: Callable[[int], None] | None = None,
) -> DatasetArrays:
    """Seeded Gaussian-like class clusters; byte-identical for the same arguments anywhere.

    Every value is computed in integers from the raw 64-bit words of one PCG64 stream
    (specs/datasets.md gives the exact rule), then scaled by 2⁻¹⁵, which float32 holds
    exactly. Memory: the two output arrays, the class centres and a bounded chunk of
    scratch. The stream does not depend on `examples`, so a smaller set is a prefix of a
    larger one with the same seed. `progress` is called with the examples done so far.
    """
    _parameter("seed", seed, 0, seed_max)
    _parameter("examples", examples, 1, examples_max)
    _parameter("features", features, 1, features_max)
    _parameter("classes", classes, 2, classes_max)
    if classes * features > synthetic_centres_max:
        raise InvalidDatasetParameter(
            "classes", f"classes * features is more than {synthetic_centres_max} centres"
        )
    if _ITEM_BYTES * examples * (features + 1) > file_bytes_max - header_bytes_max:
        raise InvalidDatasetParameter("examples", f"the file would exceed {file_bytes_max} bytes")
    generator = synthetic_bit_generator(seed, features, classes)
    centre_count = classes * features
    centre_words = generator.random_raw(-(-centre_count // 4))
    # Each centre is a 16-bit lane u, minus 32 768: an integer in [-32 768, 32 767].
    centres = _lanes(centre_words).reshape(-1)[:centre_count].astype(np.int64) - 32_768
    centres = centres.reshape(classes, features)
    x = np.empty((examples, features), dtype=np.float32)
    y = np.empty(examples, dtype=np.int32)
    scale = np.float32(2.0**-15)
    rows_per_chunk = max(1, synthetic_chunk_bytes // (8 * (features + 1)))
    for start in range(0, examples, rows_per_chunk):
        rows = min(rows_per_chunk, examples - start)
        words = generator.random_raw(rows * (features + 1)).reshape(rows, features + 1)
        # Label: the high 32 bits times the class count, shifted down 32 (all below 2⁴⁸).
        labels = ((words[:, 0] >> np.uint64(32)) * np.uint64(classes)) >> np.uint64(32)
        # Noise: the sum of a word's four 16-bit lanes minus their mean, 131 070; the sum
        # of four uniforms is close to a normal, and integer sums round nowhere.
        noise = _lanes(words[:, 1:]).sum(axis=-1, dtype=np.int64) - 131_070
        values = centres[labels.astype(np.intp)] + noise  # |value| < 2¹⁸: exact in float32
        x[start : start + rows] = values.astype(np.float32) * scale
        y[start : start + rows] = labels.astype(np.int32)
        if progress is not None:
            progress(start + rows)
    return DatasetArrays("synthetic", synthetic_source(seed, features, classes), classes, x, y)


def _lanes(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint16]:
    """The four 16-bit lanes of each word, least significant first (a new last axis)."""
    # Little-endian words read as little-endian halves are the lanes in that order on any
    # machine; twice as fast as shifting and masking.
    little = words.astype(np.dtype("<u8"), copy=False)
    lanes: npt.NDArray[np.uint16] = little.view(np.dtype("<u2")).reshape(*words.shape, 4)
    return lanes


def _parameter(field: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidDatasetParameter(
            field, f"expected an integer in [{low}, {high}], got {value!r}"
        )


# -- blob store ------------------------------------------------------------------------


BlobTarget = BlobStore | GatewayClient


def publish(directory: Path, target: BlobTarget) -> str:
    """Put the dataset in `directory` into a blob store or a gateway; its id.

    The whole dataset is checked first (a dataset that would be refused on fetch is not
    published). The data file goes first and the manifest last, so whoever finds the
    manifest (the blob named by the id) finds the data too.
    """
    dataset_id, _ = read_manifest(directory)
    manifest = load_dataset(directory, dataset_id).manifest
    data_digest = "0x" + manifest.file_sha256.hex()
    raw = manifest.encode()
    files = DatasetFiles.in_directory(directory)
    if isinstance(target, BlobStore):
        with files.data.open("rb") as handle:
            target.put(data_digest, handle, MediaType.SAFETENSORS)
        target.put(dataset_id, io.BytesIO(raw), MediaType.OCTET_STREAM)
    else:
        target.put_blob(data_digest, files.data, SAFETENSORS)
        target.put_blob(dataset_id, raw, OCTET_STREAM)
    return dataset_id


def fetch(dataset_id: str, source: BlobTarget, cache_dir: Path) -> LoadedDataset:
    """The dataset named `dataset_id`, from a blob store or a gateway, checked in full.

    A local `BlobStore`'s files are read where they lie (`cache_dir` is not used). From a
    gateway, the dataset is downloaded into `cache_dir/<id hex>/` unless a copy there
    passes every check already; a copy that fails one is downloaded again, never trusted.
    A blob the source does not hold raises DatasetNotFound.
    """
    expected = parse_dataset_id(dataset_id).hex()
    if isinstance(source, BlobStore):
        raw = _read_manifest(source.path(expected))
        manifest = _checked_manifest(expected, raw)
        files = DatasetFiles(source.path(expected), source.path(manifest.file_sha256.hex()))
        return load_dataset(files, dataset_id)
    directory = cache_dir / expected
    if (directory / MANIFEST_FILE).is_file():
        with contextlib.suppress(DatasetError):
            return load_dataset(directory, dataset_id)
    raw = _download(source, "0x" + expected, lambda: source.get_blob("0x" + expected))
    manifest = _checked_manifest(expected, raw)
    directory.mkdir(parents=True, exist_ok=True)
    data_digest = "0x" + manifest.file_sha256.hex()
    _download(source, data_digest, lambda: source.download_blob(data_digest, directory / DATA_FILE))
    manifest_temporary = _temporary(directory, ".manifest-")
    try:
        manifest_temporary.write_bytes(raw)
        os.replace(manifest_temporary, directory / MANIFEST_FILE)
    finally:
        manifest_temporary.unlink(missing_ok=True)
    return load_dataset(directory, dataset_id)


def _checked_manifest(expected_hex: str, raw: bytes) -> Manifest:
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected_hex:
        raise ManifestDigestMismatch("0x" + expected_hex, "0x" + actual)
    return parse_manifest(raw)


def _download(client: GatewayClient, digest: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except GatewayError as error:
        if error.status == 404:
            raise DatasetNotFound(f"{client.base_url}/blobs/{digest}") from None
        raise

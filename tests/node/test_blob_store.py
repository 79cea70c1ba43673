"""The blob store and the safetensors header check, without HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save

from node.blobs import (
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    DigestMismatch,
    InvalidBlob,
    InvalidDigest,
    MediaType,
)
from node.json_nesting import nests_deeper_than
from node.safetensors_format import InvalidSafetensors, check_safetensors


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


class _Dribble:
    """A body that yields a few bytes per read and cannot tell its length."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(min(size, 7) if size > 0 else 7)


def test_put_stores_once_and_refuses_what_is_not_claimed(tmp_path: Path) -> None:
    """A blob is stored under its digest once; a wrong digest, an oversized body or a
    malformed name stores nothing."""
    store = BlobStore(tmp_path, blob_bytes_max=100)
    data = b"a" * 100
    first = store.put(_digest(data), _Dribble(data))
    assert (first.digest, first.size, first.created) == (_digest(data), 100, True)
    assert not store.put("0x" + _digest(data), io.BytesIO(data)).created
    with store.open(_digest(data)) as handle:
        assert handle.read() == data
    with pytest.raises(DigestMismatch):
        store.put(_digest(b"other"), io.BytesIO(b"not other"))
    with pytest.raises(BlobTooLarge):
        store.put(_digest(data + b"a"), _Dribble(data + b"a"))
    with pytest.raises(InvalidDigest):
        store.put("abc", io.BytesIO(b""))
    with pytest.raises(BlobNotFound):
        store.open(_digest(b"other"))
    assert _files(tmp_path) == [tmp_path / _digest(data)[:2] / _digest(data)[2:]]


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    """Temporary files a crash left behind are cleared once they are a day old."""
    store = BlobStore(tmp_path)
    stale = tmp_path / "tmp" / "left-over"
    stale.write_bytes(b"partial")
    fresh = tmp_path / "tmp" / "in-flight"
    fresh.write_bytes(b"partial")
    old = stale.stat().st_mtime - 2 * 24 * 3600
    os.utime(stale, (old, old))
    assert store.remove_stale_temporaries() == 1
    assert _files(tmp_path) == [fresh]


def _checkpoint(**extra: Any) -> bytes:
    tensors = {
        "layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "layer.bias": np.zeros(3, dtype=np.float64),
        "steps": np.array([1, 2], dtype=np.int64),
        "empty": np.zeros((0, 5), dtype=np.float32),
        **extra,
    }
    return save(tensors, metadata={"job": "j1"})


def _check(data: bytes) -> None:
    check_safetensors(io.BytesIO(data), len(data))


def _with_header(header: dict[str, Any], data: bytes = b"", padding: int = 0) -> bytes:
    raw = json.dumps(header).encode() + b" " * padding
    return struct.pack("<Q", len(raw)) + raw + data


def test_files_written_by_the_safetensors_library_pass(tmp_path: Path) -> None:
    """Headers the reference implementation writes, empty tensors and metadata included,
    are accepted, and what is accepted the library loads."""
    data = _checkpoint()
    header = check_safetensors(io.BytesIO(data), len(data))
    assert {t.name for t in header.tensors} == {"layer.weight", "layer.bias", "steps", "empty"}
    assert header.metadata == {"job": "j1"}
    path = tmp_path / "ok.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), framework="np") as handle:
        assert handle.get_tensor("layer.weight").shape == (2, 3)
    store = BlobStore(tmp_path / "blobs")
    assert store.put(_digest(data), io.BytesIO(data), MediaType.SAFETENSORS).created


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
_TWICE = b'{"t":' + json.dumps(F32).encode() + b',"t":' + json.dumps(F32).encode() + b"}"
_DEEP = b'{"t":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
# Each malformed file, and a word of the reason it must be refused for.
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "shorter than the length prefix": (b"\x01\x02", "shorter"),
    "length past the end": (struct.pack("<Q", 1000) + b"{}", "past the end"),
    "length over the limit": (struct.pack("<Q", 2**40) + b"{}", "limit"),
    "not JSON": (struct.pack("<Q", 3) + b"{x}", "not JSON"),
    "not an object": (_with_header([]), "start with"),  # type: ignore[arg-type]
    "unknown dtype": (_with_header({"t": {**F32, "dtype": "F7"}}, bytes(8)), "dtype"),
    "negative dimension": (_with_header({"t": {**F32, "shape": [-2]}}, bytes(8)), "shape"),
    "boolean dimension": (_with_header({"t": {**F32, "shape": [True, 2]}}, bytes(8)), "shape"),
    "size not dtype times elements": (
        _with_header({"t": {**F32, "shape": [3]}}, bytes(8)),
        "needs",
    ),
    "a gap before the first tensor": (
        _with_header({"t": {**F32, "data_offsets": [4, 12]}}, bytes(12)),
        "without gaps",
    ),
    "overlapping tensors": (
        _with_header({"a": F32, "b": {**F32, "data_offsets": [4, 12]}}, bytes(12)),
        "without gaps",
    ),
    "trailing bytes": (_with_header({"t": F32}, bytes(9)), "cover"),
    "data cut short": (_with_header({"t": F32}, bytes(7)), "cover"),
    "extra key": (_with_header({"t": {**F32, "x": 1}}, bytes(8)), "exactly"),
    "float in the header": (_with_header({"t": {**F32, "shape": [2.0]}}, bytes(8)), "non-integer"),
    "metadata not strings": (_with_header({"__metadata__": {"a": 1}}), "__metadata__"),
    "duplicate names": (struct.pack("<Q", len(_TWICE)) + _TWICE + bytes(8), "twice"),
    "deeply nested header": (struct.pack("<Q", len(_DEEP)) + _DEEP, "nests deeper"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_headers_are_refused(case: str) -> None:
    """Each way a safetensors file can lie or break is refused, for its own reason."""
    data, reason = BAD_FILES[case]
    with pytest.raises(InvalidSafetensors) as refused:
        _check(data)
    assert reason in refused.value.reason


@given(st.integers(min_value=0, max_value=len(_checkpoint()) - 1))
def test_every_truncation_is_refused(cut: int) -> None:
    """A safetensors file cut anywhere short of its end is refused."""
    with pytest.raises(InvalidSafetensors):
        _check(_checkpoint()[:cut])


def test_a_refused_safetensors_blob_is_not_stored(tmp_path: Path) -> None:
    """The store keeps nothing of a blob whose safetensors header does not check out."""
    store = BlobStore(tmp_path)
    data = _checkpoint()[:-1]
    with pytest.raises(InvalidBlob):
        store.put(_digest(data), io.BytesIO(data), MediaType.SAFETENSORS)
    assert _files(tmp_path) == []


def test_nesting_is_measured_outside_strings() -> None:
    """Depth counts arrays and objects, not brackets inside strings (escapes included)."""
    assert nests_deeper_than(b"[" * 5 + b"]" * 5, 4)
    assert not nests_deeper_than(b"[" * 4 + b"]" * 4, 4)
    assert not nests_deeper_than(b'{"a": "[[[[[[[[[[\\"[[[[["}', 2)
    assert nests_deeper_than(b'[["x\\"]"], [[[1]]]]', 3)

"""Checking that a file is a well-formed safetensors file, by reading its header only.

A provider's checkpoint is untrusted input: nothing here imports torch or unpickles
anything. The format (https://github.com/huggingface/safetensors) is an 8-byte
little-endian header length N, N bytes of UTF-8 JSON (padded with spaces), then the
tensor data. The header maps tensor names to {dtype, shape, data_offsets} (offsets
relative to the start of the data) and may hold a `__metadata__` map of strings.

A file is accepted only when every byte of the data belongs to exactly one tensor: the
tensors, sorted by offset, tile the data from 0 to its end, and each tensor's byte length
is its dtype's size times its element count. So a truncated file, a header that lies
about a size, or a pickle with a forged length prefix is refused before anything reads
the data.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

from node.json_nesting import nests_deeper_than

# Bytes per element of each dtype safetensors writes for byte-aligned types; a dtype not
# listed (sub-byte floats, anything newer) is refused rather than guessed at.
DTYPE_BYTES: Mapping[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2": 1,
    "F8_E5M2FNUZ": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}
METADATA_KEY = "__metadata__"
# The reference implementation refuses headers over 100 MB; ours are a few hundred bytes
# per tensor, so 16 MiB holds tens of thousands of tensors and bounds what we parse.
header_bytes_max = 16 * 1024 * 1024
dims_max = 32
# {name: {shape: [...]}} is three levels; a deeper header is not a safetensors header.
header_depth_max = 3
_LENGTH_BYTES = 8


class InvalidSafetensors(ValueError):
    """The bytes are not a well-formed safetensors file; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not a valid safetensors file: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    """A checked header: the tensors in data order, the metadata, and the data offset."""

    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]
    data_start: int


def check_safetensors(handle: IO[bytes], size: int) -> SafetensorsHeader:
    """Check the file open in `handle` (at offset 0) whose total length is `size` bytes."""
    if size < _LENGTH_BYTES:
        raise InvalidSafetensors(f"{size} bytes is shorter than the 8-byte header length")
    (header_bytes,) = struct.unpack("<Q", handle.read(_LENGTH_BYTES))
    if header_bytes > header_bytes_max:
        raise InvalidSafetensors(
            f"header length {header_bytes} exceeds the {header_bytes_max}-byte limit"
        )
    if header_bytes > size - _LENGTH_BYTES:
        raise InvalidSafetensors(
            f"header length {header_bytes} runs past the end of a {size}-byte file"
        )
    raw = handle.read(header_bytes)
    if len(raw) != header_bytes:
        raise InvalidSafetensors("the file ended inside the header")
    header = _parse_json(raw)
    metadata = _metadata(header.pop(METADATA_KEY, {}))
    tensors = sorted(
        (_tensor(name, entry) for name, entry in header.items()),
        key=lambda t: (t.begin, t.end),
    )
    data_bytes = size - _LENGTH_BYTES - header_bytes
    position = 0
    for tensor in tensors:
        if tensor.begin != position:
            raise InvalidSafetensors(
                f"tensor {tensor.name!r} starts at {tensor.begin}, expected {position}: "
                "the tensors must tile the data without gaps or overlaps"
            )
        position = tensor.end
    if position != data_bytes:
        raise InvalidSafetensors(
            f"the tensors cover {position} bytes of data, the file holds {data_bytes}"
        )
    return SafetensorsHeader(tuple(tensors), metadata, _LENGTH_BYTES + header_bytes)


def _parse_json(raw: bytes) -> dict[str, Any]:
    if not raw.startswith(b"{"):
        raise InvalidSafetensors("the header does not start with '{'")
    if nests_deeper_than(raw, header_depth_max):
        raise InvalidSafetensors(f"the header nests deeper than {header_depth_max} levels")
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_refuse_duplicates,
            parse_float=_refuse_number,
            parse_constant=_refuse_number,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InvalidSafetensors(f"the header is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidSafetensors("the header is not a JSON object")
    return value


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidSafetensors(f"the header names {key!r} twice")
        result[key] = value
    return result


def _refuse_number(text: str) -> Any:
    raise InvalidSafetensors(f"the header holds the non-integer number {text}")


def _metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidSafetensors(f"{METADATA_KEY} must map strings to strings")
    return value


def _tensor(name: str, entry: object) -> TensorInfo:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise InvalidSafetensors(f"tensor {name!r} must have exactly dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise InvalidSafetensors(f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or len(shape) > dims_max or not all(_is_count(d) for d in shape):
        raise InvalidSafetensors(
            f"tensor {name!r} shape must be at most {dims_max} non-negative integers"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise InvalidSafetensors(f"tensor {name!r} data_offsets must be [begin, end]")
    begin, end = offsets
    elements = 1
    for dim in shape:
        elements *= dim
    if end - begin != elements * DTYPE_BYTES[dtype]:
        raise InvalidSafetensors(
            f"tensor {name!r} spans {end - begin} bytes, but {dtype} {shape} needs "
            f"{elements * DTYPE_BYTES[dtype]}"
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

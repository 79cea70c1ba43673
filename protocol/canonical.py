"""The canonical JSON encoding: the one byte form every log leaf and digest is taken over.

Rules (normative text in specs/log.md): UTF-8; object keys sorted by code point; no
insignificant whitespace; integers as JSON integers of any magnitude (amounts exceed
2**53, so readers must parse big integers); bytes as lowercase 0x-hex strings; tuples as
arrays; floats, NaN and non-string keys are refused, because a value that two readers could
round differently has no canonical form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from protocol.errors import InvalidInput

# Deep structures are a denial-of-service vector for recursive encoders; the domain never
# nests deeper than a handful of levels.
depth_max = 32

_encoder = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def normalize(value: Any, _depth: int = 0) -> Any:
    """`value` with bytes as hex and tuples as lists; refuse what has no canonical form."""
    if _depth > depth_max:
        raise InvalidInput(f"value nests deeper than {depth_max} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"object key {key!r} is not a string")
            out[key] = normalize(item, _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [normalize(item, _depth + 1) for item in value]
    raise InvalidInput(f"{type(value).__name__} has no canonical JSON form")


def encode(value: Any) -> bytes:
    """Encode `value` canonically as UTF-8 bytes."""
    return _encoder.encode(normalize(value)).encode()


def encode_normal(value: Any) -> bytes:
    """Encode a value already in normal form (only str, int, bool, None, lists and
    str-keyed dicts, as `normalize` returns and parsed commands are) without re-walking it."""
    return _encoder.encode(value).encode()


def decode(data: bytes | str) -> Any:
    """Decode canonical JSON, refusing floats so that a forged line cannot smuggle one in."""
    return json.loads(data, parse_float=_refuse_float, parse_constant=_refuse_float)


def _refuse_float(text: str) -> Any:
    raise InvalidInput(f"non-integer number {text} has no canonical form")

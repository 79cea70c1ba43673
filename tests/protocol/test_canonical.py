"""The canonical JSON encoding and unit conversions: golden vectors pin every rule."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import canonical
from protocol.assets import Asset, parse_amount, to_base_units, to_display
from protocol.errors import InvalidInput


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ({"b": 1, "a": [True, None, "x"]}, b'{"a":[true,null,"x"],"b":1}'),
        ({"amount": 10**27}, b'{"amount":1000000000000000000000000000}'),
        ({"hash": b"\x00\xab"}, b'{"hash":"0x00ab"}'),
        ({"t": (1, 2)}, b'{"t":[1,2]}'),
        ({"name": "Zoë \u2603"}, '{"name":"Zoë \u2603"}'.encode()),
        ({"q": 'say "hi"\\\n'}, b'{"q":"say \\"hi\\"\\\\\\n"}'),
        ({"\u00e9": 1, "z": 2, "a": 3}, '{"a":3,"z":2,"\u00e9":1}'.encode()),
        (-5, b"-5"),
    ],
)
def test_golden_encodings(value: object, encoded: bytes) -> None:
    """Each rule (sorted keys, big integers, hex bytes, raw UTF-8, escapes) holds."""
    assert canonical.encode(value) == encoded


def test_golden_digest_of_a_leaf_shape() -> None:
    """A leaf-shaped object always hashes to the same value (pins the whole encoding at once)."""
    leaf = {
        "index": 0,
        "type": "Genesis.Created",
        "id": "aae018ec-adee-513e-9157-0954514249a6",
        "version": 1,
        "timestamp": "2026-11-22T02:15:06.484869+00:00",
        "data": {
            "chain_id": 31337,
            "operator": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "protocol_version": "1",
        },
    }
    assert hashlib.sha256(canonical.encode(leaf)).hexdigest() == (
        hashlib.sha256(
            b'{"data":{"chain_id":31337,"operator":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",'
            b'"protocol_version":"1"},"id":"aae018ec-adee-513e-9157-0954514249a6","index":0,'
            b'"timestamp":"2026-11-22T02:15:06.484869+00:00","type":"Genesis.Created","version":1}'
        ).hexdigest()
    )


@pytest.mark.parametrize("value", [1.5, float("nan"), {"x": 0.1}, {1: "int key"}, {"s": {1, 2}}])
def test_values_without_a_canonical_form_are_refused(value: object) -> None:
    """Floats, NaN, non-string keys and sets cannot be encoded canonically."""
    with pytest.raises(InvalidInput):
        canonical.encode(value)


def test_decoding_refuses_floats_and_constants() -> None:
    """A line carrying a float or NaN is refused when read, not silently rounded."""
    for text in ('{"a":1.0}', '{"a":1e3}', '{"a":NaN}', '{"a":Infinity}'):
        with pytest.raises(InvalidInput):
            canonical.decode(text)


def test_nesting_is_bounded() -> None:
    """Deeply nested values are refused instead of exhausting the stack."""
    deep: object = 1
    for _ in range(canonical.depth_max + 2):
        deep = [deep]
    with pytest.raises(InvalidInput):
        canonical.encode(deep)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary().map(bytes),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_encoding_is_a_fixed_point(value: object) -> None:
    """Decoding a canonical encoding and encoding it again gives the same bytes."""
    encoded = canonical.encode(value)
    assert canonical.encode(canonical.decode(encoded)) == encoded


@pytest.mark.parametrize(
    ("display", "asset", "base"),
    [
        ("1", Asset.BLACK, 10**18),
        ("0.000001", Asset.USD, 1),
        ("12.5", Asset.USD, 12_500_000),
        ("0.000000000000000001", Asset.BLACK, 1),
    ],
)
def test_display_amounts_convert_exactly(display: str, asset: Asset, base: int) -> None:
    """Display strings convert to base units exactly and back to the same text."""
    assert to_base_units(display, asset) == base
    assert to_display(base, asset) == display


@pytest.mark.parametrize("display", ["0.0000001", "-1", "abc", "1e-30"])
def test_amounts_finer_than_a_base_unit_or_negative_are_refused(display: str) -> None:
    """A USD amount below one base unit, a negative or a non-number is refused."""
    with pytest.raises(InvalidInput):
        to_base_units(display, Asset.USD)


@pytest.mark.parametrize("value", [True, 1.0, "1.5", "-3", "", 2**256, "9" * 79, "\u0661\u0662"])
def test_malformed_base_unit_amounts_are_refused(value: object) -> None:
    """Booleans, floats, fractions, negatives and out-of-range amounts are refused."""
    with pytest.raises(InvalidInput):
        parse_amount(value)

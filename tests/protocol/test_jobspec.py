"""The training job specification: strict parsing, canonical form, digests and float32 rules."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import canonical
from protocol.assets import Asset, amount_max
from protocol.errors import InvalidInput
from protocol.jobspec import (
    AdamW,
    JobSpec,
    Real,
    Sgd,
    VerificationMode,
    batch_size_max,
    load_job_spec,
    parse_decimal,
    parse_job_spec,
    round_to_float32,
    segment_steps_max,
    segments_max,
)

FIXTURE = Path(__file__).parent / "fixtures" / "jobspec_digits.yaml"


def fixture_text() -> str:
    return FIXTURE.read_text()


def fixture_document() -> dict[str, Any]:
    # The fixture is YAML written as one JSON object (YAML is a superset of JSON), so the
    # standard library's json reads it and the tests need no YAML library.
    document: dict[str, Any] = json.loads(fixture_text())
    return document


def set_path(document: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A deep copy of `document` with the node at `path` (`model.hidden[1]`) replaced."""
    out = copy.deepcopy(document)
    steps = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = out
    for step in steps[:-1]:
        node = node[int(step[1:-1])] if step.startswith("[") else node[step]
    last = steps[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return out


def refused_field(document: object) -> str | None:
    """Parse `document`, which must be refused, and return the field path the error names."""
    with pytest.raises(InvalidInput) as caught:
        parse_job_spec(document)  # type: ignore[arg-type]
    return caught.value.field


# The fixture in canonical JSON, byte for byte: pins key order, spellings and big integers.
FIXTURE_CANONICAL = (
    b'{"batch_size":64,"dataset":{"classes":10,"examples":1797,"features":64,'
    b'"sha256":"0x0ccec844f887a40c098ab5ab7bb4ecbe68b2e02ec95d4e094682117c9e6e46a6"},'
    b'"deadline":1798761600,"model":{"classes":10,"family":"mlp","hidden":[64,32],"input":64},'
    b'"optimizer":{"beta1":"0.9","beta2":"0.999","eps":"1e-8","lr":"0.001","name":"adamw",'
    b'"weight_decay":"0.01"},"payment":{"currency":"BLACK","price_per_step_max":100000000000000},'
    b'"seed":1234567890123456789,"segment_steps":50,"total_steps":600,'
    b'"verification":{"detection_probability":"0.99","mode":"exact"},"version":"1"}'
)


# --- the fixture ---------------------------------------------------------------------------


def test_digits_fixture_parses_to_the_expected_spec() -> None:
    """The digits fixture yields a 64-64-32-10 MLP trained by AdamW for 600 steps in 12 segments."""
    spec = parse_job_spec(fixture_document())
    assert spec.model.widths == (64, 64, 32, 10)
    assert spec.dataset.examples == 1797 and spec.dataset.features == 64
    assert isinstance(spec.optimizer, AdamW)
    assert spec.optimizer.lr.value == Fraction(1, 1000)
    assert spec.optimizer.eps.text == "1e-8"
    assert spec.verification.mode is VerificationMode.EXACT
    assert spec.verification.detection_probability.value == Fraction(99, 100)
    assert spec.payment.currency is Asset.BLACK
    assert spec.parameter_count() == 64 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10 == 6570
    assert spec.segments() == [(start, start + 50) for start in range(0, 600, 50)]
    assert spec.budget_max() == 600 * 10**14


def test_fixture_is_written_in_canonical_form() -> None:
    """The fixture's document is exactly the canonical `to_json()` of the spec it describes."""
    assert parse_job_spec(fixture_document()).to_json() == fixture_document()


def test_fixture_canonical_encoding_and_digest_are_pinned() -> None:
    """The fixture's canonical bytes and content id never change (golden vector)."""
    spec = parse_job_spec(fixture_document())
    assert canonical.encode(spec.to_json()) == FIXTURE_CANONICAL
    assert spec.digest() == hashlib.sha256(canonical.encode(spec.to_json())).digest()
    assert spec.digest().hex() == (
        "1ecaccce3a9192cc4e81ef9e3f37b55808975114ba5321d9d4dd6d7b6f6243ae"
    )


def test_fixture_hyperparameters_have_pinned_float32_bits() -> None:
    """Each AdamW hyperparameter of the fixture maps to its known IEEE binary32 pattern."""
    optimizer = parse_job_spec(fixture_document()).optimizer
    assert isinstance(optimizer, AdamW)
    assert optimizer.lr.float32_bits() == 0x3A83126F
    assert optimizer.beta1.float32_bits() == 0x3F666666
    assert optimizer.beta2.float32_bits() == 0x3F7FBE77
    assert optimizer.eps.float32_bits() == 0x322BCC77
    assert optimizer.weight_decay.float32_bits() == 0x3C23D70A


def test_load_job_spec_reads_the_fixture_text() -> None:
    """Reading the JSON text gives the same spec as parsing the decoded mapping."""
    assert load_job_spec(fixture_text()) == parse_job_spec(fixture_document())
    assert load_job_spec(fixture_text().encode()) == parse_job_spec(fixture_document())


def reversed_keys(node: Any) -> Any:
    """`node` with every object's keys in reverse insertion order."""
    if isinstance(node, dict):
        return {key: reversed_keys(node[key]) for key in reversed(list(node))}
    if isinstance(node, list):
        return [reversed_keys(item) for item in node]
    return node


def test_other_spellings_of_the_fixture_share_its_digest() -> None:
    """Trailing zeros, exponents, letter case and key order do not change the job's digest."""
    document = fixture_document()
    respelled = document
    for path, text in [
        ("optimizer.lr", "1E-3"),
        ("optimizer.beta1", "0.9000"),
        ("optimizer.beta2", "999e-3"),
        ("optimizer.eps", "0.00000001"),
        ("optimizer.weight_decay", "0.010"),
        ("verification.detection_probability", "9.9e-1"),
        ("dataset.sha256", document["dataset"]["sha256"].upper().replace("0X", "0x")),
    ]:
        respelled = set_path(respelled, path, text)
    spec = parse_job_spec(reversed_keys(respelled))
    assert spec == parse_job_spec(document)
    assert spec.to_json() == document
    assert spec.digest() == parse_job_spec(document).digest()


def test_changing_any_hyperparameter_changes_the_digest() -> None:
    """A different value (not spelling) of one hyperparameter is a different job."""
    document = fixture_document()
    other = set_path(document, "optimizer.lr", "0.0011")
    assert parse_job_spec(other).digest() != parse_job_spec(document).digest()


# --- decimal strings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical_text"),
    [
        ("0", "0"),
        ("0.000", "0"),
        ("0e7", "0"),
        ("0.01", "0.01"),
        ("0.010", "0.01"),
        ("1e-2", "0.01"),
        ("10E-3", "0.01"),
        ("1e-8", "1e-8"),
        ("1E-8", "1e-8"),
        ("1e-08", "1e-8"),
        ("0.00000001", "1e-8"),
        ("0.000001", "0.000001"),
        ("0.0000001", "1e-7"),
        ("0.00000015", "1.5e-7"),
        ("5e-4", "0.0005"),
        ("123.4500", "123.45"),
        ("1.5e+3", "1500"),
        ("1e20", "100000000000000000000"),
        ("1e21", "1e+21"),
        ("12e20", "1.2e+21"),
    ],
)
def test_decimals_take_their_canonical_spelling(text: str, canonical_text: str) -> None:
    """Each spelling normalises to the one canonical spelling of its exact value."""
    real = parse_decimal(text)
    assert real.text == canonical_text
    assert real.value == Fraction(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".5",
        "5.",
        "01",
        "00.5",
        "+1",
        "-1",
        "1e",
        "1e+",
        "1e12345",
        " 1",
        "1 ",
        "1\n",
        "1_000",
        "1,5",
        "1.2.3",
        "1e1.5",
        "NaN",
        "inf",
        "Infinity",
        "0x10",
        "\uff11",
        "\u0663",
        "1" * 65,
        "0." + "0" * 99 + "1",
    ],
)
def test_malformed_decimal_strings_are_refused(text: str) -> None:
    """Anything outside the unsigned JSON-number grammar and its length limits is refused."""
    with pytest.raises(InvalidInput) as caught:
        parse_decimal(text, "optimizer.lr")
    assert caught.value.field == "optimizer.lr"


@pytest.mark.parametrize("value", [0.001, Decimal("0.001"), 1, True, None, ["0.1"]])
def test_decimals_must_be_strings(value: object) -> None:
    """A number (which a reader may already have rounded) is refused where a decimal is due."""
    with pytest.raises(InvalidInput, match="decimal string"):
        parse_decimal(value, "optimizer.lr")


def test_real_refuses_a_non_canonical_spelling_built_by_hand() -> None:
    """Building a Real in another spelling is a programmer error and crashes loudly."""
    with pytest.raises(AssertionError):
        Real("0.010")
    with pytest.raises(AssertionError):
        Real("abc")
    assert Real("0.01") == parse_decimal("0.010")


# --- float32 conversion --------------------------------------------------------------------


def float32_bits(value: float) -> int:
    return int(numpy.float32(value).view(numpy.uint32))


def float32_of_bits(bits: int) -> float:
    return float(numpy.uint32(bits).view(numpy.float32))


def assert_nearest_ties_to_even(x: Fraction, got: float) -> None:
    """`got` is a float32 no farther from `x` than either neighbour, and even on a tie."""
    assert float(numpy.float32(got)) == got
    here = abs(x - Fraction(got))
    f = numpy.float32(got)
    for toward in (-numpy.inf, numpy.inf):
        neighbour = numpy.nextafter(f, numpy.float32(toward))
        if not numpy.isfinite(neighbour):
            continue
        there = abs(x - Fraction(float(neighbour)))
        assert here < there or (here == there and float32_bits(got) % 2 == 0), (x, got)


@given(
    st.integers(0, 10**25),
    st.integers(-70, 12),
)
def test_float32_conversion_picks_the_nearest_float32(c: int, q: int) -> None:
    """Any decimal converts to the float32 nearest its exact value, checked against numpy."""
    x = Fraction(c) * Fraction(10) ** q
    assert_nearest_ties_to_even(x, round_to_float32(x))


@given(st.integers(0, 0x7F7FFFFE), st.booleans())
def test_float32_halfway_points_round_to_even(bits: int, negative: bool) -> None:
    """A value exactly halfway between two float32s rounds to the one with an even significand."""
    low, high = float32_of_bits(bits), float32_of_bits(bits + 1)
    middle = (Fraction(low) + Fraction(high)) / 2
    if negative:
        middle = -middle
    got = round_to_float32(middle)
    # The midpoint is exactly a float64, so numpy's float64-to-float32 cast is a valid reference.
    assert got == float(numpy.float32(float(middle)))
    assert float32_bits(abs(got)) % 2 == 0
    assert abs(got) in (low, high)


@given(st.integers(0, 0x7F7FFFFE), st.integers(9, 40), st.booleans())
def test_float32_values_just_off_a_halfway_point_round_toward_it(
    bits: int, digits: int, above: bool
) -> None:
    """A decimal a hair above (below) a midpoint rounds up (down), whatever the parity."""
    low, high = float32_of_bits(bits), float32_of_bits(bits + 1)
    middle = (Fraction(low) + Fraction(high)) / 2
    hair = middle / 10**digits
    x = middle + hair if above else middle - hair
    assert round_to_float32(x) == (high if above else low)


def test_float32_conversion_does_not_double_round_through_float64() -> None:
    """1 + 2**-24 + 1e-29 rounds up to 1 + 2**-23, where a float64 detour gives 1.0."""
    text = "1.00000005960464477539062500001"
    assert float(numpy.float32(Fraction(text))) == 1.0
    assert parse_decimal(text).float32() == 1 + 2**-23


@given(st.integers(0, 0x7F7FFFFF), st.booleans())
def test_every_float32_converts_to_itself(bits: int, negative: bool) -> None:
    """The exact value of any finite float32, subnormals included, converts to that float32."""
    value = float32_of_bits(bits) * (-1 if negative else 1)
    assert round_to_float32(Fraction(value)) == value


def test_float32_conversion_overflows_to_infinity_at_the_ieee_threshold() -> None:
    """Values from halfway above the largest float32 round to infinity, just below do not."""
    largest = Fraction(float32_of_bits(0x7F7FFFFF))
    threshold = Fraction(2**128 - 2**103)
    assert round_to_float32(threshold) == float("inf")
    assert round_to_float32(-threshold) == float("-inf")
    assert round_to_float32(threshold - 1) == largest


@given(st.integers(0x35800000, 0x41200000))
def test_halfway_decimal_strings_convert_through_the_parser(bits: int) -> None:
    """A midpoint written out as its exact decimal string parses and rounds to even."""
    low, high = float32_of_bits(bits), float32_of_bits(bits + 1)
    middle = (Fraction(low) + Fraction(high)) / 2
    # The denominator is a power of two, 2**k, so the value is exactly n * 5**k / 10**k.
    k = middle.denominator.bit_length() - 1
    text = f"{middle.numerator * 5**k}e-{k}"
    assert Fraction(text) == middle
    real = parse_decimal(text)
    assert real.value == middle
    assert float32_bits(real.float32()) % 2 == 0
    assert real.float32() == float(numpy.float32(float(middle)))


# --- random valid specs --------------------------------------------------------------------

Value = tuple[int, int]  # c * 10**q


def values_in(kind: str) -> st.SearchStrategy[Value]:
    """Exact decimals safely inside the range of a hyperparameter kind, float32 included."""
    if kind == "lr":
        return st.tuples(st.integers(1, 99999), st.integers(-10, -4))
    if kind in ("momentum", "beta1", "beta2"):
        return st.integers(1, 6).flatmap(
            lambda k: st.tuples(st.integers(0, 10**k - 1), st.just(-k))
        )
    if kind == "eps":
        return st.tuples(st.integers(1, 999), st.integers(-12, -3))
    if kind == "weight_decay":
        return st.tuples(st.integers(0, 1000), st.integers(-6, -3))
    assert kind == "detection_probability"
    return st.integers(1, 9).flatmap(lambda k: st.tuples(st.integers(1, 10**k - 1), st.just(-k)))


@st.composite
def spellings(draw: st.DrawFn, value: Value) -> str:
    """A random valid spelling of c * 10**q: trailing zeros, exponents, case, sign, padding."""
    c, q = value
    if c == 0:
        return draw(st.sampled_from(["0", "0.0", "0.000", "0e5", "0E-3", "0.00e+2"]))
    zeros = draw(st.integers(0, 3))
    digits, q = str(c) + "0" * zeros, q - zeros
    exponent = draw(st.integers(-6, 6))
    scale = q - exponent
    if scale >= 0:
        mantissa = digits + "0" * scale
    else:
        point = len(digits) + scale
        mantissa = (
            f"{digits[:point]}.{digits[point:]}" if point > 0 else "0." + "0" * -point + digits
        )
    if exponent == 0 and draw(st.booleans()):
        return mantissa
    letter = draw(st.sampled_from("eE"))
    sign = "-" if exponent < 0 else draw(st.sampled_from(["", "+"]))
    width = draw(st.integers(1, 3))
    return f"{mantissa}{letter}{sign}{str(abs(exponent)).zfill(width)}"


HYPERPARAMETERS = {
    "sgd": ("lr", "momentum", "weight_decay"),
    "adamw": ("lr", "beta1", "beta2", "eps", "weight_decay"),
}


@st.composite
def spec_values(draw: st.DrawFn) -> dict[str, Any]:
    """The values of a random valid spec, with each decimal as (c, q) still to be spelled."""
    width = draw(st.integers(1, 128))
    classes = draw(st.integers(2, 32))
    examples = draw(st.integers(1, 10**6))
    total_steps = draw(st.integers(1, 10**6))
    segment_low = max(1, -(-total_steps // segments_max))
    name = draw(st.sampled_from(sorted(HYPERPARAMETERS)))
    return {
        "version": "1",
        "model": {
            "family": "mlp",
            "input": width,
            "hidden": draw(st.lists(st.integers(1, 128), max_size=4)),
            "classes": classes,
        },
        "dataset": {
            "sha256": "0x" + draw(st.binary(min_size=32, max_size=32)).hex(),
            "examples": examples,
            "features": width,
            "classes": classes,
        },
        "optimizer": {
            "name": name,
            **{key: draw(values_in(key)) for key in HYPERPARAMETERS[name]},
        },
        "batch_size": draw(st.integers(1, min(examples, batch_size_max))),
        "seed": draw(st.integers(0, 2**64 - 1)),
        "total_steps": total_steps,
        "segment_steps": draw(st.integers(segment_low, min(total_steps, segment_steps_max))),
        "verification": {
            "mode": draw(st.sampled_from(["exact", "tolerance"])),
            "detection_probability": draw(values_in("detection_probability")),
        },
        "payment": {
            "currency": draw(st.sampled_from(["BLACK", "USD"])),
            "price_per_step_max": draw(st.integers(1, 10**24)),
        },
        "deadline": draw(st.integers(1, 2**64 - 1)),
    }


def spelled(draw: st.DrawFn, values: dict[str, Any]) -> dict[str, Any]:
    """A document for `values` with every decimal spelled at random and hash case mixed."""
    document = copy.deepcopy(values)
    optimizer = document["optimizer"]
    for key in HYPERPARAMETERS[optimizer["name"]]:
        optimizer[key] = draw(spellings(optimizer[key]))
    verification = document["verification"]
    verification["detection_probability"] = draw(spellings(verification["detection_probability"]))
    if draw(st.booleans()):
        document["dataset"]["sha256"] = "0x" + document["dataset"]["sha256"][2:].upper()
    return reversed_keys(document) if draw(st.booleans()) else document


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    return spelled(draw, draw(spec_values()))


@st.composite
def document_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Two independent spellings of one random spec, and its values."""
    values = draw(spec_values())
    return spelled(draw, values), spelled(draw, values), values


@given(document_pairs())
def test_random_specs_round_trip_and_respellings_share_a_digest(
    pair: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    """Any valid spec survives to_json and parse unchanged, and every spelling has one digest."""
    first, second, values = pair
    spec = parse_job_spec(first)
    assert parse_job_spec(spec.to_json()) == spec
    assert parse_job_spec(spec.to_json()).to_json() == spec.to_json()
    assert parse_job_spec(canonical.decode(canonical.encode(spec.to_json()))) == spec
    assert parse_job_spec(second) == spec
    assert parse_job_spec(second).digest() == spec.digest()
    for key, real in spec.to_json()["optimizer"].items():
        if key != "name":
            c, q = values["optimizer"][key]
            assert Fraction(real) == Fraction(c) * Fraction(10) ** q
            assert parse_decimal(real).text == real


@given(spec_values())
def test_canonical_documents_are_their_own_to_json(values: dict[str, Any]) -> None:
    """A document already in canonical spelling comes back from to_json unchanged."""
    document = copy.deepcopy(values)
    for key in HYPERPARAMETERS[document["optimizer"]["name"]]:
        c, q = document["optimizer"][key]
        document["optimizer"][key] = parse_decimal(f"{c}e{q}").text
    c, q = document["verification"]["detection_probability"]
    document["verification"]["detection_probability"] = parse_decimal(f"{c}e{q}").text
    assert parse_job_spec(document).to_json() == document


# --- random corruptions --------------------------------------------------------------------


def nodes(node: Any, path: str = "") -> Iterator[tuple[str, Any, bool]]:
    """Every (path, value, is an object member) below `node`."""
    if isinstance(node, dict):
        for key, item in node.items():
            where = f"{path}.{key}" if path else key
            yield where, item, True
            yield from nodes(item, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            where = f"{path}[{index}]"
            yield where, item, False
            yield from nodes(item, where)


def wrong_values(path: str, value: Any) -> list[object]:
    """Values of the wrong type (or shape) for the node at `path`, whatever its bounds."""
    if isinstance(value, dict):
        return [None, True, 1.5, "x", []]
    if path == "model.hidden":
        return [None, True, 1.5, "x", {}]
    return [None, True, False, 1.5, "x", [], {}, Decimal("1.5")]


@st.composite
def corruptions(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid document with one thing broken, and the field path the error must name."""
    document = draw(documents())
    members = list(nodes(document))
    kind = draw(st.sampled_from(["replace", "delete", "add"]))
    if kind == "replace":
        path, value, _ = draw(st.sampled_from(members))
        return set_path(document, path, draw(st.sampled_from(wrong_values(path, value)))), path
    if kind == "delete":
        path, _, _ = draw(st.sampled_from([m for m in members if m[2]]))
        parent, _, name = path.rpartition(".")
        broken = copy.deepcopy(document)
        container = broken
        for step in filter(None, parent.split(".")):
            container = container[step]
        del container[name]
        return broken, path
    objects = [""] + [path for path, value, _ in members if isinstance(value, dict)]
    parent = draw(st.sampled_from(objects))
    broken = copy.deepcopy(document)
    container = broken
    for step in filter(None, parent.split(".")):
        container = container[step]
    container["surplus"] = draw(st.sampled_from([0, "1", None]))
    return broken, f"{parent}.surplus" if parent else "surplus"


@given(corruptions())
def test_single_field_corruptions_are_refused_naming_the_field(
    corruption: tuple[dict[str, Any], str],
) -> None:
    """A wrong type, a missing field or an unknown field anywhere is refused with its path."""
    document, path = corruption
    assert refused_field(document) == path


# --- bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("version", "2"),
        ("version", 1),
        ("model.family", "cnn"),
        ("model.family", "MLP"),
        ("model.input", 0),
        ("model.input", 65537),
        ("model.hidden[0]", 0),
        ("model.hidden[1]", 65537),
        ("model.hidden", [8] * 17),
        ("model.classes", 1),
        ("model.classes", 65537),
        ("dataset.sha256", "0x" + "ab" * 31),
        ("dataset.sha256", "ab" * 32),
        ("dataset.sha256", "0X" + "ab" * 32),
        ("dataset.sha256", "0x" + "g" * 64),
        ("dataset.examples", 0),
        ("dataset.examples", 2**32 + 1),
        ("dataset.features", 63),
        ("dataset.classes", 9),
        ("optimizer.name", "adam"),
        ("optimizer.name", "AdamW"),
        ("optimizer.lr", "0"),
        ("optimizer.lr", "10.0000001"),
        ("optimizer.lr", "-0.001"),
        ("optimizer.lr", "1e-40"),
        ("optimizer.lr", "1e-50"),
        ("optimizer.lr", 0.001),
        ("optimizer.beta1", "1"),
        ("optimizer.beta1", "1e-39"),
        ("optimizer.beta2", "0.99999999"),
        ("optimizer.eps", "0"),
        ("optimizer.eps", "1.5"),
        ("optimizer.weight_decay", "1.01"),
        ("batch_size", 0),
        ("batch_size", 1798),
        ("seed", -1),
        ("seed", 2**64),
        ("total_steps", 0),
        ("total_steps", 2**32 + 1),
        ("segment_steps", 0),
        ("segment_steps", 601),
        ("verification.mode", "fast"),
        ("verification.detection_probability", "0"),
        ("verification.detection_probability", "1"),
        ("verification.detection_probability", "1.5"),
        ("payment.currency", "ETH"),
        ("payment.currency", "black"),
        ("payment.price_per_step_max", 0),
        ("payment.price_per_step_max", "100"),
        ("payment.price_per_step_max", 2**256),
        ("payment.price_per_step_max", amount_max // 600 + 1),
        ("deadline", 0),
        ("deadline", 2**64),
    ],
)
def test_out_of_bounds_values_are_refused_naming_the_field(path: str, value: object) -> None:
    """Each limit of the spec (widths, ranges, float32 rounding, budget) refuses with the path."""
    assert refused_field(set_path(fixture_document(), path, value)) == path


INTEGER_PATHS = [
    "model.input",
    "model.hidden[0]",
    "model.classes",
    "dataset.examples",
    "dataset.features",
    "dataset.classes",
    "batch_size",
    "seed",
    "total_steps",
    "segment_steps",
    "payment.price_per_step_max",
    "deadline",
]


@pytest.mark.parametrize("path", INTEGER_PATHS)
@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_integers(path: str, value: bool) -> None:
    """true and false are refused wherever a count or an amount is due, though bool is an int."""
    assert refused_field(set_path(fixture_document(), path, value)) == path


def wide_model(input_width: int, classes: int) -> dict[str, Any]:
    """The fixture with a hidden-layer-free model of the given shape (dataset to match)."""
    document = set_path(fixture_document(), "model.hidden", [])
    for path, value in [
        ("model.input", input_width),
        ("dataset.features", input_width),
        ("model.classes", classes),
        ("dataset.classes", classes),
    ]:
        document = set_path(document, path, value)
    return document


def test_parameter_limit_is_enforced_on_the_whole_model() -> None:
    """65536 x 4095 (+ biases) fits under 2**28 parameters; 65536 x 4096 does not."""
    assert parse_job_spec(wide_model(65536, 4095)).parameter_count() == 4095 * 65537
    assert refused_field(wide_model(65536, 4096)) == "model"


def test_sixteen_hidden_layers_are_allowed() -> None:
    """The depth limit counts hidden layers: sixteen parse, seventeen do not."""
    spec = parse_job_spec(set_path(fixture_document(), "model.hidden", [8] * 16))
    assert len(spec.model.hidden) == 16
    assert spec.parameter_count() == 64 * 8 + 8 + 15 * (8 * 8 + 8) + 8 * 10 + 10


def test_segment_count_is_limited() -> None:
    """2**17 steps in segments of 2 is the most segments allowed; one more step is refused."""
    document = set_path(fixture_document(), "segment_steps", 2)
    assert len(parse_job_spec(set_path(document, "total_steps", 2**17)).segments()) == 2**16
    assert refused_field(set_path(document, "total_steps", 2**17 + 1)) == "segment_steps"


def test_the_largest_affordable_price_is_accepted() -> None:
    """A price whose budget is exactly within uint256 parses and keeps its exact budget."""
    price = amount_max // 600
    spec = parse_job_spec(set_path(fixture_document(), "payment.price_per_step_max", price))
    assert spec.budget_max() == 600 * price <= amount_max


def test_sgd_specs_parse_with_their_own_fields() -> None:
    """An SGD optimizer takes lr, momentum and weight_decay, and refuses AdamW's betas."""
    sgd = {"name": "sgd", "lr": "0.1", "momentum": "0.9", "weight_decay": "0"}
    spec = parse_job_spec(set_path(fixture_document(), "optimizer", sgd))
    assert isinstance(spec.optimizer, Sgd)
    assert spec.optimizer.weight_decay.float32() == 0.0
    assert spec.to_json()["optimizer"] == sgd
    with_beta = set_path(fixture_document(), "optimizer", {**sgd, "beta1": "0.9"})
    assert refused_field(with_beta) == "optimizer.beta1"


# --- segments ------------------------------------------------------------------------------


def test_the_last_segment_is_shorter_when_steps_do_not_divide() -> None:
    """601 steps in segments of 50 make 12 full segments and a last one of 1 step."""
    spec = parse_job_spec(set_path(fixture_document(), "total_steps", 601))
    assert len(spec.segments()) == 13
    assert spec.segments()[-1] == (600, 601)


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_segments_cover_every_step_exactly_once(total_steps: int, segment_steps: int) -> None:
    """Segments are contiguous, start at 0, end at total_steps, and only the last is short."""
    segment_steps = min(segment_steps, total_steps)
    document = set_path(fixture_document(), "total_steps", total_steps)
    spec = parse_job_spec(set_path(document, "segment_steps", segment_steps))
    segments = spec.segments()
    assert segments[0][0] == 0 and segments[-1][1] == total_steps
    assert all(a[1] == b[0] for a, b in pairwise(segments))
    assert all(end - start == segment_steps for start, end in segments[:-1])
    assert 0 < segments[-1][1] - segments[-1][0] <= segment_steps
    assert len(segments) == -(-total_steps // segment_steps)


# --- documents as a whole ------------------------------------------------------------------


@pytest.mark.parametrize("document", [[], "spec", None, 7])
def test_a_document_that_is_not_an_object_is_refused(document: object) -> None:
    """The top level must be an object; the error names no field."""
    assert refused_field(document) is None


def test_non_string_keys_are_refused() -> None:
    """A YAML mapping with an integer key is refused at the object that holds it."""
    document = fixture_document()
    document["model"][1] = "one"
    assert refused_field(document) == "model"


def test_load_job_spec_refuses_an_unquoted_decimal_naming_its_field() -> None:
    """A bare JSON number for a hyperparameter is refused with a hint to quote it."""
    text = fixture_text().replace('"lr": "0.001"', '"lr": 0.001')
    with pytest.raises(InvalidInput, match="quote it") as caught:
        load_job_spec(text)
    assert caught.value.field == "optimizer.lr"


def test_load_job_spec_refuses_nan() -> None:
    """NaN is not a decimal string, whichever field it is in."""
    text = fixture_text().replace('"eps": "1e-8"', '"eps": NaN')
    with pytest.raises(InvalidInput) as caught:
        load_job_spec(text)
    assert caught.value.field == "optimizer.eps"


def test_load_job_spec_refuses_duplicate_keys() -> None:
    """An object that names one field twice has no single meaning and is refused."""
    text = fixture_text().replace('"lr": "0.001"', '"lr": "0.001", "lr": "0.1"')
    with pytest.raises(InvalidInput, match="twice"):
        load_job_spec(text)


@pytest.mark.parametrize(
    "text",
    [
        b"{",
        b"\xff{}",
        "[" * 20000 + "]" * 20000,
        " " * 65537 + "{}",
        '{"seed": ' + "9" * 5000 + "}",
    ],
)
def test_load_job_spec_refuses_malformed_or_oversized_text(text: str | bytes) -> None:
    """Broken JSON, bad UTF-8, deep nesting, huge integers and oversized text are refused."""
    with pytest.raises(InvalidInput):
        load_job_spec(text)


def test_job_spec_is_a_frozen_value() -> None:
    """A parsed spec cannot be modified, so its digest cannot drift after it is taken."""
    spec = parse_job_spec(fixture_document())
    with pytest.raises(AttributeError):
        spec.seed = 1  # type: ignore[misc]
    assert isinstance(spec, JobSpec)
    assert hash(spec) == hash(parse_job_spec(fixture_document()))

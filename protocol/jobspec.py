"""The training job specification: everything a verifier needs to re-execute any step.

A job spec names the model, the dataset (by content hash), the optimizer and its
hyperparameters, the batch size, the seed, the number of steps and how they are cut into
segments, how the steps are verified and what the developer pays at most. Normative text:
specs/jobspec.md.

Real hyperparameters travel as decimal strings ("0.001", "1e-8"), never as JSON floats:
canonical JSON has no floats, and a float's text can round differently in different
readers. Each decimal is held in one canonical spelling, so two spellings of the same job
have one digest, and `Real.float32` gives the exact float32 the kernels must use
(round-to-nearest-even of the exact decimal value, computed with integers).

`parse_job_spec` takes an already-parsed mapping, so a YAML document can be read by the
caller's YAML library and handed in; `load_job_spec` reads JSON text itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from itertools import pairwise
from typing import Any, ClassVar

from protocol import canonical
from protocol.assets import Asset, amount_max, parse_asset
from protocol.errors import InvalidInput

SPEC_VERSION = "1"

# Limits, unit last. They keep a spec cheap to check and every derived quantity (segment
# lists, parameter tensors, the budget) bounded before anything is allocated.
width_max = 65536
hidden_layers_max = 16
parameters_max = 2**28
examples_max = 2**32
batch_size_max = 65536
total_steps_max = 2**32
segment_steps_max = 2**20
segments_max = 2**16
seed_max = 2**64 - 1
deadline_max = 2**64 - 1
decimal_chars_max = 100
decimal_digits_max = 64
spec_bytes_max = 65536

# A non-negative JSON number (RFC 8259) without a sign, written as a string: no leading
# zeros, no bare "." at either end, at most four exponent digits. ASCII classes on purpose:
# `\d` would also match other scripts' digits.
_DECIMAL = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]{1,4}))?")
_SHA256 = re.compile(r"0x[0-9a-fA-F]{64}")

# The smallest normal float32. Subnormals are refused because CPUs and GPUs disagree on
# flushing them to zero, and a verifier must compute what the provider computed.
_FLOAT32_NORMAL_MIN = Fraction(1, 2**126)


def _split(text: str) -> tuple[int, int] | None:
    """`text` as (c, q) with value c * 10**q and c free of trailing zeros, or None."""
    match = _DECIMAL.fullmatch(text)
    if match is None:
        return None
    whole, fraction, exponent = match.group(1), match.group(2) or "", match.group(3) or "0"
    c = int(whole + fraction)
    q = int(exponent) - len(fraction)
    if c == 0:
        return 0, 0
    while c % 10 == 0:
        c //= 10
        q += 1
    return c, q


def _spell(c: int, q: int) -> str:
    """The canonical spelling of c * 10**q: ECMAScript's Number-to-string layout, exact digits."""
    if c == 0:
        return "0"
    digits = str(c)
    adjusted = len(digits) - 1 + q
    if -7 < adjusted < 21:
        if q >= 0:
            return digits + "0" * q
        point = len(digits) + q
        if point > 0:
            return f"{digits[:point]}.{digits[point:]}"
        return "0." + "0" * -point + digits
    mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
    return f"{mantissa}e{'+' if adjusted > 0 else '-'}{abs(adjusted)}"


def round_to_float32(value: Fraction) -> float:
    """The float32 nearest to `value`, ties to even (IEEE 754 binary32, roundTiesToEven).

    Computed with integers only, so nothing rounds twice on the way: converting through a
    float64 first (as `numpy.float32(float(x))` does) can land exactly on a float32 halfway
    point that the exact value was not on, and then round the wrong way. Values beyond the
    float32 range give an infinity. The result is a Python float, which holds every float32
    exactly.
    """
    if value == 0:
        return 0.0
    sign = -1.0 if value < 0 else 1.0
    n, d = abs(value.numerator), value.denominator
    # Find e with 2**e <= |value| < 2**(e + 1); the bit lengths give it within one.
    e = n.bit_length() - d.bit_length()
    if (n << max(-e, 0)) < (d << max(e, 0)):
        e -= 1
    # The quantum is the weight of the last of the 24 significand bits; below the normal
    # range it stays at 2**-149 (subnormals have fewer bits).
    quantum = max(e, -126) - 23
    num, den = (n, d << quantum) if quantum >= 0 else (n << -quantum, d)
    m, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and m & 1):
        m += 1
    if m.bit_length() + quantum > 128:
        return sign * math.inf
    return sign * math.ldexp(m, quantum)


@dataclass(frozen=True, slots=True)
class Real:
    """A real hyperparameter: an exact non-negative decimal, held in its canonical spelling."""

    text: str

    def __post_init__(self) -> None:
        # A hand-built Real in another spelling would give the same job a second digest.
        parts = _split(self.text)
        if parts is None or _spell(*parts) != self.text:
            raise AssertionError(f"{self.text!r} is not a canonical decimal; use parse_decimal")

    @property
    def value(self) -> Fraction:
        """The exact value."""
        return Fraction(self.text)

    def float32(self) -> float:
        """The float32 the kernels use for this value (exactly, held in a Python float)."""
        return round_to_float32(self.value)

    def float32_bits(self) -> int:
        """The IEEE 754 binary32 bit pattern of `float32()`, as an unsigned integer."""
        bits: int = struct.unpack(">I", struct.pack(">f", self.float32()))[0]
        return bits

    def __str__(self) -> str:
        return self.text


def parse_decimal(value: object, field: str = "value") -> Real:
    """Return `value`, a decimal string, as a Real in canonical spelling; refuse anything else."""
    if not isinstance(value, str):
        kind = (
            "a number"
            if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
            else type(value).__name__
        )
        raise InvalidInput(
            f'{field}: expected a decimal string such as "0.001", got {kind} '
            "(quote it: a JSON or YAML number may be rounded before it arrives)",
            field=field,
        )
    parts = _split(value) if len(value) <= decimal_chars_max else None
    if parts is None:
        raise InvalidInput(
            f"{field}: {value[:decimal_chars_max]!r} is not a decimal string "
            f"(digits, optional .digits, optional e±digits; at most {decimal_chars_max} "
            "characters)",
            field=field,
        )
    if len(str(parts[0])) > decimal_digits_max:
        raise InvalidInput(
            f"{field}: more than {decimal_digits_max} significant digits", field=field
        )
    return Real(_spell(*parts))


@dataclass(frozen=True, slots=True)
class _Interval:
    """The range a real hyperparameter must lie in, with open or closed ends."""

    low: Fraction
    high: Fraction
    low_open: bool
    high_open: bool

    def __contains__(self, x: Fraction) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def __str__(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{self.low}, {self.high}{right}"


_LR = _Interval(Fraction(0), Fraction(10), low_open=True, high_open=False)
_MOMENT = _Interval(Fraction(0), Fraction(1), low_open=False, high_open=True)
_EPS = _Interval(Fraction(0), Fraction(1), low_open=True, high_open=False)
_DECAY = _Interval(Fraction(0), Fraction(1), low_open=False, high_open=False)
_PROBABILITY = _Interval(Fraction(0), Fraction(1), low_open=True, high_open=True)


def _real(value: object, field: str, interval: _Interval, *, float32: bool) -> Real:
    """Parse a bounded decimal; a kernel input must also be in bounds after rounding."""
    real = parse_decimal(value, field)
    exact = real.value
    if exact not in interval:
        raise InvalidInput(f"{field}: {real} is outside {interval}", field=field)
    if float32:
        rounded = Fraction(real.float32())
        if exact != 0 and rounded < _FLOAT32_NORMAL_MIN:
            raise InvalidInput(
                f"{field}: {real} rounds to {float(rounded)!r} in float32, which is zero or "
                "subnormal",
                field=field,
            )
        if rounded not in interval:
            raise InvalidInput(
                f"{field}: {real} rounds to {float(rounded)!r} in float32, which is outside "
                f"{interval}",
                field=field,
            )
    return real


@dataclass(frozen=True, slots=True)
class MlpModel:
    """A multi-layer perceptron: linear layers with ReLU between them, softmax cross-entropy."""

    family: ClassVar[str] = "mlp"
    input: int
    hidden: tuple[int, ...]
    classes: int

    @property
    def widths(self) -> tuple[int, ...]:
        """Layer widths from the input to the logits."""
        return (self.input, *self.hidden, self.classes)

    def parameter_count(self) -> int:
        """Weights and biases of every linear layer."""
        widths = self.widths
        return sum(i * o + o for i, o in pairwise(widths))

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "input": self.input,
            "hidden": list(self.hidden),
            "classes": self.classes,
        }


@dataclass(frozen=True, slots=True)
class Dataset:
    """The training data, named by the SHA-256 of its manifest, and its shape."""

    sha256: bytes
    examples: int
    features: int
    classes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": "0x" + self.sha256.hex(),
            "examples": self.examples,
            "features": self.features,
            "classes": self.classes,
        }


@dataclass(frozen=True, slots=True)
class Sgd:
    """Stochastic gradient descent with momentum and L2 weight decay."""

    name: ClassVar[str] = "sgd"
    lr: Real
    momentum: Real
    weight_decay: Real

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr.text,
            "momentum": self.momentum.text,
            "weight_decay": self.weight_decay.text,
        }


@dataclass(frozen=True, slots=True)
class AdamW:
    """Adam with decoupled weight decay."""

    name: ClassVar[str] = "adamw"
    lr: Real
    beta1: Real
    beta2: Real
    eps: Real
    weight_decay: Real

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr.text,
            "beta1": self.beta1.text,
            "beta2": self.beta2.text,
            "eps": self.eps.text,
            "weight_decay": self.weight_decay.text,
        }


Optimizer = Sgd | AdamW

# Each optimizer's hyperparameters in document order, with their ranges.
_OPTIMIZERS: dict[str, dict[str, _Interval]] = {
    Sgd.name: {"lr": _LR, "momentum": _MOMENT, "weight_decay": _DECAY},
    AdamW.name: {
        "lr": _LR,
        "beta1": _MOMENT,
        "beta2": _MOMENT,
        "eps": _EPS,
        "weight_decay": _DECAY,
    },
}


class VerificationMode(StrEnum):
    """How a re-executed step is compared with the provider's committed state."""

    EXACT = "exact"
    TOLERANCE = "tolerance"


@dataclass(frozen=True, slots=True)
class Verification:
    """The comparison rule and the probability of catching a provider that fakes steps."""

    mode: VerificationMode
    detection_probability: Real

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "detection_probability": self.detection_probability.text,
        }


@dataclass(frozen=True, slots=True)
class Payment:
    """The asset the job pays in and the most it pays for one step, in base units."""

    currency: Asset
    price_per_step_max: int

    def to_json(self) -> dict[str, Any]:
        return {"currency": self.currency.value, "price_per_step_max": self.price_per_step_max}


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A training job, fully determined; build it with `parse_job_spec`, which validates it."""

    model: MlpModel
    dataset: Dataset
    optimizer: Optimizer
    batch_size: int
    seed: int
    total_steps: int
    segment_steps: int
    verification: Verification
    payment: Payment
    deadline: int

    def to_json(self) -> dict[str, Any]:
        """The canonical document: normalised values, ready for `canonical.encode`."""
        return {
            "version": SPEC_VERSION,
            "model": self.model.to_json(),
            "dataset": self.dataset.to_json(),
            "optimizer": self.optimizer.to_json(),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "total_steps": self.total_steps,
            "segment_steps": self.segment_steps,
            "verification": self.verification.to_json(),
            "payment": self.payment.to_json(),
            "deadline": self.deadline,
        }

    def digest(self) -> bytes:
        """The job's content id: SHA-256 of the canonical JSON of `to_json()`."""
        return hashlib.sha256(canonical.encode(self.to_json())).digest()

    def segments(self) -> list[tuple[int, int]]:
        """(start, end) step of every segment; steps start..end-1, the last may be shorter."""
        s, t = self.segment_steps, self.total_steps
        return [(start, min(start + s, t)) for start in range(0, t, s)]

    def budget_max(self) -> int:
        """The most the job can cost, in base units of the payment currency."""
        return self.total_steps * self.payment.price_per_step_max

    def parameter_count(self) -> int:
        """The number of trainable float32 parameters of the model."""
        return self.model.parameter_count()


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _mapping(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{path or 'job spec'}: expected an object", field=path or None)
    for key in value:
        if not isinstance(key, str):
            raise InvalidInput(
                f"{path or 'job spec'}: key {key!r} is not a string", field=path or None
            )
    return value


def _fields(value: Mapping[str, object], path: str, names: tuple[str, ...]) -> None:
    """Refuse a missing field (the first in document order) or an unknown one."""
    for name in names:
        if name not in value:
            raise InvalidInput(f"{_join(path, name)}: missing", field=_join(path, name))
    unknown = sorted(set(value) - set(names))
    if unknown:
        where = _join(path, unknown[0])
        raise InvalidInput(f"{where}: unknown field", field=where)


def _tag(value: Mapping[str, object], path: str, name: str, options: tuple[str, ...]) -> str:
    """Read the field that picks a variant; checked first, since it decides the other fields."""
    where = _join(path, name)
    if name not in value:
        raise InvalidInput(f"{where}: missing", field=where)
    return _choice(value[name], where, options)


def _choice(value: object, field: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise InvalidInput(
            f"{field}: expected one of {', '.join(options)}, got {value!r}", field=field
        )
    return value


def _integer(value: object, field: str, low: int, high: int) -> int:
    # bool is an int subclass, and true/false in a spec is always a mistake for a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field}: expected an integer", field=field)
    if not low <= value <= high:
        raise InvalidInput(f"{field}: {value} is outside [{low}, {high}]", field=field)
    return value


def _model(value: object) -> MlpModel:
    data = _mapping(value, "model")
    _tag(data, "model", "family", (MlpModel.family,))
    _fields(data, "model", ("family", "input", "hidden", "classes"))
    width = _integer(data["input"], "model.input", 1, width_max)
    hidden = data["hidden"]
    if not isinstance(hidden, (list, tuple)):
        raise InvalidInput("model.hidden: expected a list of widths", field="model.hidden")
    if len(hidden) > hidden_layers_max:
        raise InvalidInput(
            f"model.hidden: more than {hidden_layers_max} hidden layers", field="model.hidden"
        )
    widths = tuple(
        _integer(item, f"model.hidden[{i}]", 1, width_max) for i, item in enumerate(hidden)
    )
    # One class has nothing to classify: its softmax cross-entropy is always zero.
    classes = _integer(data["classes"], "model.classes", 2, width_max)
    model = MlpModel(width, widths, classes)
    if model.parameter_count() > parameters_max:
        raise InvalidInput(
            f"model: {model.parameter_count()} parameters, more than {parameters_max}",
            field="model",
        )
    return model


def _dataset(value: object, model: MlpModel) -> Dataset:
    data = _mapping(value, "dataset")
    _fields(data, "dataset", ("sha256", "examples", "features", "classes"))
    digest = data["sha256"]
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise InvalidInput("dataset.sha256: expected 0x and 64 hex digits", field="dataset.sha256")
    examples = _integer(data["examples"], "dataset.examples", 1, examples_max)
    features = _integer(data["features"], "dataset.features", 1, width_max)
    if features != model.input:
        raise InvalidInput(
            f"dataset.features: {features} features, but the model's input is {model.input}",
            field="dataset.features",
        )
    classes = _integer(data["classes"], "dataset.classes", 2, width_max)
    if classes != model.classes:
        raise InvalidInput(
            f"dataset.classes: {classes} classes, but the model has {model.classes}",
            field="dataset.classes",
        )
    return Dataset(bytes.fromhex(digest[2:]), examples, features, classes)


def _optimizer(value: object) -> Optimizer:
    data = _mapping(value, "optimizer")
    name = _tag(data, "optimizer", "name", tuple(_OPTIMIZERS))
    bounds = _OPTIMIZERS[name]
    _fields(data, "optimizer", ("name", *bounds))
    reals = {
        key: _real(data[key], f"optimizer.{key}", interval, float32=True)
        for key, interval in bounds.items()
    }
    if name == Sgd.name:
        return Sgd(**reals)
    return AdamW(**reals)


def _verification(value: object) -> Verification:
    data = _mapping(value, "verification")
    _fields(data, "verification", ("mode", "detection_probability"))
    mode = _choice(data["mode"], "verification.mode", tuple(m.value for m in VerificationMode))
    probability = _real(
        data["detection_probability"],
        "verification.detection_probability",
        _PROBABILITY,
        float32=False,
    )
    return Verification(VerificationMode(mode), probability)


def _payment(value: object, total_steps: int) -> Payment:
    data = _mapping(value, "payment")
    _fields(data, "payment", ("currency", "price_per_step_max"))
    currency = data["currency"]
    if not isinstance(currency, str):
        raise InvalidInput("payment.currency: expected an asset name", field="payment.currency")
    asset = parse_asset(currency, "payment.currency")
    # A JSON integer only: a digit string would be a second spelling of the same price.
    price = _integer(data["price_per_step_max"], "payment.price_per_step_max", 1, amount_max)
    if total_steps * price > amount_max:
        raise InvalidInput(
            "payment.price_per_step_max: the budget (total_steps times this) exceeds 2**256 - 1",
            field="payment.price_per_step_max",
        )
    return Payment(asset, price)


_TOP_FIELDS = (
    "version",
    "model",
    "dataset",
    "optimizer",
    "batch_size",
    "seed",
    "total_steps",
    "segment_steps",
    "verification",
    "payment",
    "deadline",
)


def parse_job_spec(data: Mapping[str, Any]) -> JobSpec:
    """Validate a parsed job spec document strictly and return it as a JobSpec.

    Unknown, missing and mistyped fields are refused with InvalidInput naming the field's
    path (`model.hidden[2]`). The mapping may come from `json.loads` or from a YAML parser
    (YAML is the caller's concern, so `protocol` depends on no YAML library); in YAML, quote
    every decimal and the hash, or the parser turns them into floats and integers first.
    """
    top = _mapping(data, "")
    _fields(top, "", _TOP_FIELDS)
    _choice(top["version"], "version", (SPEC_VERSION,))
    model = _model(top["model"])
    dataset = _dataset(top["dataset"], model)
    optimizer = _optimizer(top["optimizer"])
    batch_size = _integer(top["batch_size"], "batch_size", 1, batch_size_max)
    if batch_size > dataset.examples:
        raise InvalidInput(
            f"batch_size: {batch_size} is more than the dataset's {dataset.examples} examples",
            field="batch_size",
        )
    seed = _integer(top["seed"], "seed", 0, seed_max)
    total_steps = _integer(top["total_steps"], "total_steps", 1, total_steps_max)
    segment_steps = _integer(top["segment_steps"], "segment_steps", 1, segment_steps_max)
    # A segment longer than the run would be a second spelling of the one-segment job.
    if segment_steps > total_steps:
        raise InvalidInput(
            f"segment_steps: {segment_steps} is more than total_steps {total_steps}",
            field="segment_steps",
        )
    if -(-total_steps // segment_steps) > segments_max:
        raise InvalidInput(
            f"segment_steps: {total_steps} steps make more than {segments_max} segments",
            field="segment_steps",
        )
    verification = _verification(top["verification"])
    payment = _payment(top["payment"], total_steps)
    deadline = _integer(top["deadline"], "deadline", 1, deadline_max)
    return JobSpec(
        model,
        dataset,
        optimizer,
        batch_size,
        seed,
        total_steps,
        segment_steps,
        verification,
        payment,
        deadline,
    )


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys silently; a spec that says two things
    # about one field has no single meaning.
    out: dict[str, Any] = {}
    for key, item in pairs:
        if key in out:
            raise InvalidInput(f"job spec: field {key!r} appears twice in one object")
        out[key] = item
    return out


def load_job_spec(text: str | bytes) -> JobSpec:
    """Parse a job spec from JSON text (at most `spec_bytes_max` bytes)."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > spec_bytes_max:
        raise InvalidInput(f"job spec: {size} bytes, more than {spec_bytes_max}")
    try:
        # Numbers with a fraction arrive as Decimal so the field check can name them;
        # NaN and the infinities arrive as floats for the same reason.
        data = json.loads(text, parse_float=Decimal, object_pairs_hook=_refuse_duplicates)
    except InvalidInput:
        raise
    except (ValueError, RecursionError) as error:
        raise InvalidInput(f"job spec: not valid JSON ({error})") from error
    return parse_job_spec(data)

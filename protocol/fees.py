"""How an accepted segment's payment and a slashed stake are split, and how much stake is enough.

Every rate is in basis points (1 bps = 1/10,000) and every amount an integer of base units:
a fee is the amount times its rate, divided by 10,000 and rounded down, and the party that
takes "the rest" takes the rounding remainder, so each split sums to its input exactly.
`specs/compute_sampling_fees.md` is the normative description.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType

from protocol.assets import Asset, parse_amount, parse_asset
from protocol.errors import InvalidInput

BPS_DENOMINATOR = 10_000

# Paying in BLACK costs less platform fee than paying in the USD stablecoin, which is the
# network's reason for users to hold its own token.
DEFAULT_PLATFORM_BPS: Mapping[Asset, int] = MappingProxyType({Asset.BLACK: 100, Asset.USD: 250})
DEFAULT_VERIFIER_BPS = 200


def _default_platform_bps() -> Mapping[Asset, int]:
    return DEFAULT_PLATFORM_BPS


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """The platform fee rate per currency and the verifier fee rate, in basis points."""

    # Excluded from the hash because a mapping is not hashable; equality still compares it.
    platform_bps: Mapping[Asset, int] = field(default_factory=_default_platform_bps, hash=False)
    verifier_bps: int = DEFAULT_VERIFIER_BPS

    def __post_init__(self) -> None:
        verifier_bps = _check_bps(self.verifier_bps, "verifier_bps")
        if not isinstance(self.platform_bps, Mapping):
            raise InvalidInput(
                "platform_bps: expected a mapping of asset to basis points", field="platform_bps"
            )
        rates: dict[Asset, int] = {}
        for key, rate in self.platform_bps.items():
            if not isinstance(key, str):
                raise InvalidInput(f"platform_bps: {key!r} is not an asset", field="platform_bps")
            asset = parse_asset(key, "platform_bps")
            rates[asset] = _check_bps(rate, f"platform_bps.{asset}")
        for asset in Asset:
            if asset not in rates:
                raise InvalidInput(
                    f"platform_bps: no platform fee rate for {asset}", field="platform_bps"
                )
            if rates[asset] + verifier_bps > BPS_DENOMINATOR:
                raise InvalidInput(
                    f"platform_bps.{asset}: {rates[asset]} bps plus the verifier's "
                    f"{verifier_bps} bps exceed {BPS_DENOMINATOR}",
                    field=f"platform_bps.{asset}",
                )
        # A read-only copy in Asset order, so that a caller's dict mutated later cannot
        # change a schedule that was validated, and two equal schedules compare equal.
        frozen = MappingProxyType({asset: rates[asset] for asset in Asset})
        object.__setattr__(self, "platform_bps", frozen)

    def platform_rate(self, currency: Asset) -> int:
        """Return the platform fee rate for payments in `currency`, in basis points."""
        return self.platform_bps[parse_asset(currency, "currency")]


@dataclass(frozen=True, slots=True)
class SegmentSplit:
    """Where an accepted segment's payment goes, in base units of its currency."""

    provider: int
    verifier: int
    platform: int

    @property
    def total(self) -> int:
        """The amount split: the three shares added."""
        return self.provider + self.verifier + self.platform


@dataclass(frozen=True, slots=True)
class SlashSplit:
    """Where a slashed stake goes: the verifier's bounty and the treasury's rest."""

    bounty: int
    treasury: int

    @property
    def total(self) -> int:
        """The stake slashed: the two shares added."""
        return self.bounty + self.treasury


def settle_segment(amount: int, currency: Asset, schedule: FeeSchedule) -> SegmentSplit:
    """Split an accepted segment's payment into provider payment, verifier fee and platform fee.

    Both fees round down and the provider takes the rest: no fee is ever above its
    advertised rate, and the party who did the work, not the operator, gets the dust.
    """
    amount = parse_amount(amount, "amount", allow_zero=True)
    platform = amount * schedule.platform_rate(currency) // BPS_DENOMINATOR
    verifier = amount * schedule.verifier_bps // BPS_DENOMINATOR
    split = SegmentSplit(
        provider=amount - platform - verifier, verifier=verifier, platform=platform
    )
    # The schedule caps the two rates at 10,000 bps together, so the provider's rest
    # cannot be negative; a split that breaks this is a bug here and must not be posted.
    if split.total != amount or min(split.provider, split.verifier, split.platform) < 0:
        raise AssertionError(f"segment split {split} does not divide {amount}")
    return split


def slash_split(stake_slashed: int, bounty_bps: int) -> SlashSplit:
    """Split a slashed stake into the verifier's bounty (rounded down) and the treasury's rest.

    The bounty rounds down so that it never exceeds its advertised rate; the treasury,
    which absorbs every rounding remainder, takes the dust.
    """
    stake_slashed = parse_amount(stake_slashed, "stake_slashed", allow_zero=True)
    rate = _check_bps(bounty_bps, "bounty_bps")
    bounty = stake_slashed * rate // BPS_DENOMINATOR
    split = SlashSplit(bounty=bounty, treasury=stake_slashed - bounty)
    if split.total != stake_slashed or split.treasury < 0:
        raise AssertionError(f"slash split {split} does not divide {stake_slashed}")
    return split


def economic_security(stake: int, detection_probability: Fraction, payment_at_risk: int) -> bool:
    """Return whether faking a segment loses money in expectation: stake*P >= payment*(1 - P).

    A cheat is caught with probability P and then loses its stake (and is not paid); it
    escapes with probability 1 - P and then keeps a payment it did no work for. Fraud does
    not pay when the expected loss is at least the expected gain. Compared exactly: with
    P = n / d the test is stake * n >= payment * (d - n).
    """
    stake = parse_amount(stake, "stake", allow_zero=True)
    payment_at_risk = parse_amount(payment_at_risk, "payment_at_risk", allow_zero=True)
    p = _check_probability(detection_probability)
    n, d = p.numerator, p.denominator
    return stake * n >= payment_at_risk * (d - n)


def stake_min(payment_at_risk: int, detection_probability: Fraction) -> int:
    """Return the least stake for which faking a segment does not pay: ceil(payment*(1-P)/P).

    The answer is a plain integer and may exceed `amount_max` when P is tiny: then no stake
    the ledger can hold makes the fraud unprofitable, and the caller must sample more.
    """
    payment_at_risk = parse_amount(payment_at_risk, "payment_at_risk", allow_zero=True)
    p = _check_probability(detection_probability)
    n, d = p.numerator, p.denominator
    if n == 0:
        if payment_at_risk == 0:
            return 0
        raise InvalidInput(
            "detection_probability: a cheat that is never caught is deterred by no stake",
            field="detection_probability",
        )
    # Ceiling division of integers: -(-a // b).
    return -(-payment_at_risk * (d - n) // n)


def _check_bps(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field}: expected an integer of basis points", field=field)
    if not 0 <= value <= BPS_DENOMINATOR:
        raise InvalidInput(
            f"{field}: {value} bps is not between 0 and {BPS_DENOMINATOR}", field=field
        )
    return value


def _check_probability(value: object) -> Fraction:
    # A float would turn an exact comparison of integers into a rounding question.
    field = "detection_probability"
    if isinstance(value, int) and not isinstance(value, bool):
        value = Fraction(value)
    if not isinstance(value, Fraction):
        raise InvalidInput(f"{field}: expected a Fraction, got {value!r}", field=field)
    if not 0 <= value <= 1:
        raise InvalidInput(f"{field}: {value} is not between 0 and 1", field=field)
    return value

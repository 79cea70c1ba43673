"""Fee and slashing splits, and the stake that makes fraud unprofitable.

Expected values are written out by hand (the spec's worked examples) or recomputed here
from the formulae of `specs/compute_sampling_fees.md` with plain integer arithmetic.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.assets import Asset, amount_max
from protocol.errors import InvalidInput
from protocol.fees import (
    FeeSchedule,
    SegmentSplit,
    SlashSplit,
    economic_security,
    settle_segment,
    slash_split,
    stake_min,
)
from protocol.sampling import detection_probability

_PROPERTY = settings(deadline=None, print_blob=True)
BLACK = 10**18

_amounts = st.integers(0, amount_max)
_assets = st.sampled_from(list(Asset))
_probabilities = st.fractions(min_value=0, max_value=1, max_denominator=10**12)


@st.composite
def _schedules(draw: st.DrawFn) -> FeeSchedule:
    verifier = draw(st.integers(0, 10_000))
    platform = {asset: draw(st.integers(0, 10_000 - verifier)) for asset in Asset}
    return FeeSchedule(platform_bps=platform, verifier_bps=verifier)


# --- The schedule -------------------------------------------------------------------------


def test_default_schedule_charges_less_platform_fee_in_black() -> None:
    """By default the platform takes 1% of BLACK payments, 2.5% of USD ones; verifiers 2%."""
    schedule = FeeSchedule()
    assert schedule.platform_rate(Asset.BLACK) == 100
    assert schedule.platform_rate(Asset.USD) == 250
    assert schedule.verifier_bps == 200


def test_schedule_is_an_immutable_hashable_value() -> None:
    """A schedule cannot be changed after validation, even through the caller's dict."""
    rates = {Asset.BLACK: 50, Asset.USD: 300}
    schedule = FeeSchedule(platform_bps=rates, verifier_bps=100)
    rates[Asset.BLACK] = 9_999
    assert schedule.platform_rate(Asset.BLACK) == 50
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.verifier_bps = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        schedule.platform_bps[Asset.USD] = 0  # type: ignore[index]
    # Keys may be the tickers as plain strings (an Asset is a str), as read from configuration.
    by_ticker: dict[Any, int] = {"USD": 300, "BLACK": 50}
    assert schedule == FeeSchedule(platform_bps=by_ticker, verifier_bps=100)
    assert hash(schedule) == hash(
        FeeSchedule(platform_bps=rates | {Asset.BLACK: 50}, verifier_bps=100)
    )


def test_rates_may_add_up_to_the_whole_payment() -> None:
    """Platform and verifier rates summing to exactly 10,000 bps leave the provider nothing."""
    schedule = FeeSchedule(platform_bps={Asset.BLACK: 9_800, Asset.USD: 0}, verifier_bps=200)
    assert settle_segment(10_001, Asset.BLACK, schedule) == SegmentSplit(
        provider=1, verifier=200, platform=9_800
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"verifier_bps": -1}, "verifier_bps"),
        ({"verifier_bps": 10_001}, "verifier_bps"),
        ({"verifier_bps": True}, "verifier_bps"),
        ({"verifier_bps": "200"}, "verifier_bps"),
        ({"verifier_bps": 200.0}, "verifier_bps"),
        ({"platform_bps": {Asset.BLACK: 100}}, "platform_bps"),
        ({"platform_bps": {Asset.BLACK: 100, Asset.USD: 250, "EUR": 10}}, "platform_bps"),
        ({"platform_bps": {Asset.BLACK: 100, Asset.USD: 250, 7: 10}}, "platform_bps"),
        ({"platform_bps": [(Asset.BLACK, 100), (Asset.USD, 250)]}, "platform_bps"),
        ({"platform_bps": {Asset.BLACK: -1, Asset.USD: 250}}, "platform_bps.BLACK"),
        ({"platform_bps": {Asset.BLACK: 100, Asset.USD: 10_001}}, "platform_bps.USD"),
        ({"platform_bps": {Asset.BLACK: 1.5, Asset.USD: 250}}, "platform_bps.BLACK"),
        (
            {"platform_bps": {Asset.BLACK: 100, Asset.USD: 9_801}, "verifier_bps": 200},
            "platform_bps.USD",
        ),
    ],
)
def test_invalid_schedule_is_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    """Rates outside 0..10,000 bps, non-integers, missing or unknown assets, or a sum over 100%."""
    with pytest.raises(InvalidInput) as caught:
        FeeSchedule(**kwargs)
    assert caught.value.field == field


# --- Settling a segment -------------------------------------------------------------------


def test_fifty_black_segment_splits_as_in_the_spec() -> None:
    """50 BLACK pays 48.5 to the provider, 1 to the verifier and 0.5 to the platform."""
    split = settle_segment(50 * BLACK, Asset.BLACK, FeeSchedule())
    assert split == SegmentSplit(
        provider=48_500_000_000_000_000_000, verifier=BLACK, platform=BLACK // 2
    )


def test_rounding_remainder_goes_to_the_provider() -> None:
    """12,345 USD base units: fees 308 and 246 round down and the provider takes 11,791."""
    split = settle_segment(12_345, Asset.USD, FeeSchedule())
    assert split == SegmentSplit(provider=11_791, verifier=246, platform=308)
    assert split.total == 12_345


def test_tiny_payment_pays_no_fee() -> None:
    """A payment too small for any fee to reach one base unit goes whole to the provider."""
    assert settle_segment(39, Asset.USD, FeeSchedule()) == SegmentSplit(39, 0, 0)
    assert settle_segment(0, Asset.BLACK, FeeSchedule()) == SegmentSplit(0, 0, 0)


@_PROPERTY
@given(_amounts, _assets, _schedules())
def test_segment_split_sums_exactly_and_never_goes_negative(
    amount: int, currency: Asset, schedule: FeeSchedule
) -> None:
    """For any uint256 amount and valid schedule the fees are floors and the three parts sum."""
    split = settle_segment(amount, currency, schedule)
    assert split.provider + split.verifier + split.platform == amount
    assert min(split.provider, split.verifier, split.platform) >= 0
    assert split.platform == amount * schedule.platform_bps[currency] // 10_000
    assert split.verifier == amount * schedule.verifier_bps // 10_000
    # Rounding both fees down leaves the provider less than two base units above its share.
    provider_share = Fraction(
        amount * (10_000 - schedule.platform_bps[currency] - schedule.verifier_bps), 10_000
    )
    assert provider_share <= split.provider < provider_share + 2


@pytest.mark.parametrize(
    ("amount", "currency", "field"),
    [
        (amount_max + 1, Asset.BLACK, "amount"),
        (-1, Asset.BLACK, "amount"),
        (1.0, Asset.BLACK, "amount"),
        (100, "EUR", "currency"),
    ],
)
def test_bad_settlement_input_is_refused_naming_the_field(
    amount: Any, currency: Any, field: str
) -> None:
    """Amounts outside uint256, non-integers and unknown currencies raise InvalidInput."""
    with pytest.raises(InvalidInput) as caught:
        settle_segment(amount, currency, FeeSchedule())
    assert caught.value.field == field


# --- Slashing -----------------------------------------------------------------------------


def test_slash_bounty_rounds_down_and_the_treasury_takes_the_rest() -> None:
    """A 50% bounty of 1,000 BLACK and 7 base units rounds down; the treasury takes the odd unit."""
    assert slash_split(1_000 * BLACK + 7, 5_000) == SlashSplit(
        bounty=500 * BLACK + 3, treasury=500 * BLACK + 4
    )


@_PROPERTY
@given(_amounts, st.integers(0, 10_000))
def test_slash_split_sums_exactly(stake: int, bounty_bps: int) -> None:
    """For any uint256 stake and rate the bounty is the floor and the two parts sum."""
    split = slash_split(stake, bounty_bps)
    assert split.bounty + split.treasury == stake
    assert split.bounty == stake * bounty_bps // 10_000
    assert split.treasury >= 0


@pytest.mark.parametrize(
    ("stake", "bps", "field"),
    [
        (-1, 100, "stake_slashed"),
        (amount_max + 1, 100, "stake_slashed"),
        (100, 10_001, "bounty_bps"),
        (100, -1, "bounty_bps"),
        (100, False, "bounty_bps"),
    ],
)
def test_bad_slash_input_is_refused_naming_the_field(stake: int, bps: int, field: str) -> None:
    """A stake outside uint256 or a rate outside 0..10,000 bps raises InvalidInput."""
    with pytest.raises(InvalidInput) as caught:
        slash_split(stake, bps)
    assert caught.value.field == field


# --- Economic security --------------------------------------------------------------------


def test_worked_example_stake_for_a_ten_percent_fake() -> None:
    """43 samples of 1,000 steps against a 10% fake of 50 BLACK need 0.490586275510744374 BLACK."""
    odds = detection_probability(1000, 43, 100)
    stake = stake_min(50 * BLACK, odds)
    assert stake == 490_586_275_510_744_374
    assert economic_security(stake, odds, 50 * BLACK)
    assert not economic_security(stake - 1, odds, 50 * BLACK)


def test_worked_example_stake_for_a_single_faked_step() -> None:
    """Faking one step of 1,000 saves 0.05 BLACK, is caught at 43/1000, and needs ~1.11 BLACK."""
    odds = detection_probability(1000, 43, 1)
    assert odds == Fraction(43, 1000)
    assert stake_min(50 * BLACK // 1000, odds) == 1_112_790_697_674_418_605


def test_single_faked_step_needs_the_most_stake_in_the_worked_example() -> None:
    """Of every k in 1..1000 faked steps, with the pay for those steps at risk, k = 1 binds."""
    pay = 50 * BLACK
    needs = {
        k: stake_min(-(-k * pay // 1000), detection_probability(1000, 43, k))
        for k in range(1, 1001)
    }
    assert max(needs, key=needs.__getitem__) == 1
    assert needs[100] < stake_min(pay, detection_probability(1000, 43, 100))


@_PROPERTY
@given(_amounts, _probabilities.filter(lambda p: p > 0))
def test_stake_min_is_the_least_stake_that_deters_fraud(payment: int, odds: Fraction) -> None:
    """stake_min meets the inequality and one base unit less does not (unless it is zero)."""
    stake = stake_min(payment, odds)
    assert stake * odds >= payment * (1 - odds)
    if stake > 0:
        assert (stake - 1) * odds < payment * (1 - odds)
    if stake <= amount_max:
        assert economic_security(stake, odds, payment)


@_PROPERTY
@given(_amounts, _probabilities, _amounts)
def test_economic_security_compares_expected_loss_with_expected_gain(
    stake: int, odds: Fraction, payment: int
) -> None:
    """The test is stake * P >= payment * (1 - P), exactly."""
    assert economic_security(stake, odds, payment) == (stake * odds >= payment * (1 - odds))


def test_stake_beyond_uint256_is_reported_rather_than_capped() -> None:
    """A tiny P can need a stake larger than any ledger amount, and stake_min says so."""
    assert stake_min(amount_max, Fraction(1, 3)) == 2 * amount_max
    with pytest.raises(InvalidInput):
        economic_security(2 * amount_max, Fraction(1, 3), amount_max)


def test_certain_detection_needs_no_stake_and_no_detection_no_stake_suffices() -> None:
    """P = 1 deters with no stake; P = 0 deters nothing unless nothing is at risk."""
    assert stake_min(50 * BLACK, Fraction(1)) == 0
    assert stake_min(0, Fraction(0)) == 0
    assert not economic_security(amount_max, Fraction(0), 1)
    with pytest.raises(InvalidInput) as caught:
        stake_min(1, Fraction(0))
    assert caught.value.field == "detection_probability"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: stake_min(100, 0.99), "detection_probability"),  # type: ignore[arg-type]
        (lambda: stake_min(100, Fraction(3, 2)), "detection_probability"),
        (lambda: stake_min(-1, Fraction(1, 2)), "payment_at_risk"),
        (lambda: economic_security(-1, Fraction(1, 2), 1), "stake"),
        (lambda: economic_security(1, Fraction(1, 2), amount_max + 1), "payment_at_risk"),
        (lambda: economic_security(1, Fraction(-1, 2), 1), "detection_probability"),
    ],
)
def test_bad_economic_input_is_refused_naming_the_field(call: Any, field: str) -> None:
    """Floats, probabilities outside [0, 1] and amounts outside uint256 raise InvalidInput."""
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.field == field

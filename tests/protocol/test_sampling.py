"""The sampling rule: how many steps a verifier re-executes and which ones.

Expected values come from outside `protocol.sampling` where they can: the known-answer
vectors of `specs/compute_sampling_fees.md` are checked against a second, deliberately
plain implementation of the spec written below (`_reference_indices`), and detection odds
against brute-force enumeration and the textbook hypergeometric formula.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import InvalidInput
from protocol.sampling import (
    detection_probability,
    miss_terms_max,
    sample_indices,
    sample_seed,
    samples_needed,
    segment_steps_max,
    subset_range_max,
    subset_size_max,
    uniform_subset,
)

_PROPERTY = settings(deadline=None, print_blob=True)

ZERO = bytes(32)
ZERO_VERIFIER = "0x" + "00" * 20
ROOT = bytes(range(32))
BEACON = bytes(range(32, 64))
VERIFIER = "0x404142434445464748494a4b4c4d4e4f50515253"


# --- The spec's algorithm, written out plainly, as the reference --------------------------


def _reference_indices(
    root: bytes, beacon: bytes, verifier: str, steps: int, samples: int
) -> list[int]:
    seed = hashlib.sha256(
        b"blacktail/sample/v1" + root + beacon + bytes.fromhex(verifier[2:])
    ).digest()
    words: list[int] = []
    counter = 0

    def next_word() -> int:
        nonlocal counter
        if not words:
            block = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
            words.extend(int.from_bytes(block[i : i + 4], "big") for i in range(0, 32, 4))
        return words.pop(0)

    deck = list(range(steps))
    for i in range(samples):
        n = steps - i
        mask = 2 ** len(bin(n - 1)[2:]) - 1 if n > 1 else 0
        while True:
            x = next_word() & mask
            if x < n:
                break
        j = i + x
        deck[i], deck[j] = deck[j], deck[i]
    return sorted(deck[:samples])


def _brute_force_detection(steps: int, samples: int, faked: int) -> Fraction:
    # The faked transitions are the first `faked` ones; by symmetry any set gives the same odds.
    draws = list(itertools.combinations(range(steps), samples))
    caught = sum(1 for draw in draws if any(i < faked for i in draw))
    return Fraction(caught, len(draws))


# --- Known-answer vectors (pinned in specs/compute_sampling_fees.md) ----------------------

_VECTOR_1000_43 = """
    3 8 14 20 34 40 50 54 67 88 91 99 100 108 162 200 300 301 307 383 387 389 428 484 542
    555 610 625 627 676 683 689 695 723 777 780 784 808 811 833 931 932 992
"""

VECTORS = [
    (ZERO, ZERO, ZERO_VERIFIER, 10, 3, [0, 2, 5]),
    (ROOT, BEACON, VERIFIER, 10, 3, [1, 3, 5]),
    (ROOT, BEACON, VERIFIER, 1000, 10, [20, 50, 54, 99, 108, 300, 383, 387, 808, 931]),
    (ROOT, BEACON, VERIFIER, 1000, 43, [int(i) for i in _VECTOR_1000_43.split()]),
    (
        ROOT,
        BEACON,
        VERIFIER,
        2**20,
        8,
        [169059, 177059, 404467, 521599, 641132, 857388, 908073, 1025411],
    ),
    (ROOT, BEACON, VERIFIER, 7, 7, [0, 1, 2, 3, 4, 5, 6]),
    (ROOT, BEACON, VERIFIER, 1, 1, [0]),
    (ROOT, BEACON, VERIFIER, 5, 0, []),
]


@pytest.mark.parametrize(("root", "beacon", "verifier", "steps", "samples", "expected"), VECTORS)
def test_known_answer_vectors_match_the_spec_and_the_reference(
    root: bytes, beacon: bytes, verifier: str, steps: int, samples: int, expected: list[int]
) -> None:
    """Every pinned vector is what both the module and the plain reference compute."""
    assert sample_indices(root, beacon, verifier, steps, samples) == expected
    assert _reference_indices(root, beacon, verifier, steps, samples) == expected


def test_seeds_of_the_vectors_are_pinned() -> None:
    """The seed is SHA-256 of the domain, root, beacon and 20 address bytes, as in the spec."""
    assert sample_seed(ZERO, ZERO, ZERO_VERIFIER).hex() == (
        "6bf2b67318fed583cbf866df2ed690896d324e081bb8705d8d9b838c6b376a08"
    )
    assert sample_seed(ROOT, BEACON, VERIFIER).hex() == (
        "63cc0bef44c27a77799f60439f74feeceecd53de44d840bd0961c4e3af173f85"
    )
    assert len(b"blacktail/sample/v1" + ZERO + ZERO + bytes(20)) == 103


def test_first_stream_block_of_the_zero_vector_matches_the_spec_trace() -> None:
    """Block 0 of the zero vector's stream splits into the eight words the spec's trace lists."""
    seed = sample_seed(ZERO, ZERO, ZERO_VERIFIER)
    block = hashlib.sha256(seed + bytes(8)).digest()
    assert block.hex() == "ee0525d24cb8a75d21d3d58ae0a8d2bd8b3c006431dbf6002f2a4ed7f291166b"
    words = [int.from_bytes(block[i : i + 4], "big") for i in range(0, 32, 4)]
    assert words[:6] == [3993314770, 1287169885, 567530890, 3769160381, 2335965284, 836498944]


# --- Properties of the draw --------------------------------------------------------------

_bytes32 = st.binary(min_size=32, max_size=32)
_address = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


@st.composite
def _draws(draw: st.DrawFn, steps_max: int = 2000) -> tuple[bytes, bytes, str, int, int]:
    steps = draw(st.integers(1, steps_max))
    samples = draw(st.integers(0, steps))
    return draw(_bytes32), draw(_bytes32), draw(_address), steps, samples


@_PROPERTY
@given(_draws())
def test_indices_agree_with_the_reference_implementation(
    args: tuple[bytes, bytes, str, int, int],
) -> None:
    """For random inputs the module and the plain reference pick the same indices."""
    assert sample_indices(*args) == _reference_indices(*args)


@_PROPERTY
@given(_draws())
def test_indices_are_distinct_in_range_sorted_and_deterministic(
    args: tuple[bytes, bytes, str, int, int],
) -> None:
    """The sample has exactly `samples` distinct sorted indices below S, the same every time."""
    _, _, _, steps, samples = args
    indices = sample_indices(*args)
    assert len(indices) == samples
    assert indices == sorted(set(indices))
    assert all(0 <= i < steps for i in indices)
    assert sample_indices(*args) == indices


@_PROPERTY
@given(
    _bytes32, _bytes32, st.binary(min_size=20, max_size=20), st.integers(0, 83), st.integers(1, 255)
)
def test_changing_any_input_byte_changes_the_sample(
    root: bytes, beacon: bytes, verifier: bytes, position: int, flip: int
) -> None:
    """Flipping bits of any byte of root, beacon or verifier gives another sample."""
    # 8 of 2**20 steps has about 2**144 possible samples, so an honest collision is
    # out of reach and any repeat would mean the byte did not reach the seed.
    joined = bytearray(root + beacon + verifier)
    before = sample_indices(root, beacon, "0x" + verifier.hex(), 2**20, 8)
    joined[position] ^= flip
    changed = bytes(joined)
    after = sample_indices(changed[:32], changed[32:64], "0x" + changed[64:].hex(), 2**20, 8)
    assert after != before


def test_address_case_does_not_change_the_sample() -> None:
    """The verifier is hashed as 20 bytes, so its lower-case and EIP-55 forms sample alike."""
    checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert sample_indices(ROOT, BEACON, checksummed, 1000, 10) == sample_indices(
        ROOT, BEACON, checksummed.lower(), 1000, 10
    )


def test_every_subset_is_drawn_with_about_equal_frequency() -> None:
    """Over 12,000 beacons each of the 120 3-subsets of 10 steps appears 50 to 160 times."""
    # Expected 100 each; the bounds are about six standard deviations wide, and the beacons
    # are fixed, so this is a deterministic sanity check rather than a flaky statistic.
    counts = Counter(
        tuple(sample_indices(ROOT, hashlib.sha256(b"%d" % k).digest(), VERIFIER, 10, 3))
        for k in range(12_000)
    )
    assert len(counts) == math.comb(10, 3)
    assert all(50 <= c <= 160 for c in counts.values())


def test_every_index_is_hit_about_equally_often_when_rejection_is_frequent() -> None:
    """With S = 37 (a range that rejects 42% of words), every index is hit 800 to 1,200 times."""
    hits = Counter(
        i
        for k in range(7_400)
        for i in sample_indices(ROOT, hashlib.sha256(b"%d" % k).digest(), VERIFIER, 37, 5)
    )
    # Expected 7,400 * 5 / 37 = 1,000 each.
    assert sorted(hits) == list(range(37))
    assert all(800 <= c <= 1_200 for c in hits.values())


# --- How many samples ---------------------------------------------------------------------

_targets = st.fractions(min_value=0, max_value=1, max_denominator=10**6)


@st.composite
def _needs(draw: st.DrawFn) -> tuple[int, Fraction, int]:
    steps = draw(st.integers(1, 3000))
    faked = draw(st.integers(1, steps))
    return steps, draw(_targets), faked


def _counts(steps_max: int) -> st.SearchStrategy[tuple[int, int, int]]:
    """Segment sizes up to `steps_max` with a sample count and a faked count each up to S."""
    return st.integers(1, steps_max).flatmap(
        lambda steps: st.tuples(st.just(steps), st.integers(0, steps), st.integers(0, steps))
    )


@_PROPERTY
@given(_needs())
def test_samples_needed_meets_the_target_and_is_minimal(args: tuple[int, Fraction, int]) -> None:
    """The answer reaches the target exactly and one sample fewer would not."""
    steps, target, faked = args
    samples = samples_needed(steps, target, faked)
    assert 0 <= samples <= steps
    assert detection_probability(steps, samples, faked) >= target
    if samples > 0:
        assert detection_probability(steps, samples - 1, faked) < target


@_PROPERTY
@given(st.integers(1, segment_steps_max), _targets)
def test_one_faked_step_needs_the_ceiling_of_p_times_s(steps: int, target: Fraction) -> None:
    """With faked_min = 1 the miss odds are (S - s) / S, so the answer is ceil(P * S)."""
    assert samples_needed(steps, target) == math.ceil(target * steps)
    assert samples_needed(steps, target, 1) == math.ceil(target * steps)


@_PROPERTY
@given(_counts(400))
def test_detection_probability_is_the_hypergeometric_formula(args: tuple[int, int, int]) -> None:
    """P(detect) equals 1 - C(S - k, s) / C(S, s) computed directly."""
    steps, samples, faked = args
    expected = 1 - Fraction(math.comb(steps - faked, samples), math.comb(steps, samples))
    assert detection_probability(steps, samples, faked) == expected


@pytest.mark.parametrize("steps", [1, 2, 5, 8])
def test_detection_probability_matches_enumerating_every_sample(steps: int) -> None:
    """On small segments P(detect) is the share of all equally likely samples that catch a fake."""
    for samples in range(steps + 1):
        for faked in range(steps + 1):
            assert detection_probability(steps, samples, faked) == _brute_force_detection(
                steps, samples, faked
            )


@_PROPERTY
@given(_counts(500))
def test_sampling_without_replacement_beats_the_with_replacement_estimate(
    args: tuple[int, int, int],
) -> None:
    """The exact odds are never below the design page's 1 - (1 - k/S)**s approximation."""
    steps, samples, faked = args
    estimate = 1 - (1 - Fraction(faked, steps)) ** samples
    assert detection_probability(steps, samples, faked) >= estimate


def test_worked_example_of_the_spec() -> None:
    """Catching a 10% fake of 1,000 steps at odds 99/100 takes 43 samples, 44 with replacement."""
    assert samples_needed(1000, Fraction(99, 100), faked_min=100) == 43
    odds = detection_probability(1000, 43, 100)
    assert Fraction(99, 100) <= odds < Fraction(9903, 10000)
    assert 1 - Fraction(9, 10) ** 43 < Fraction(99, 100) <= 1 - Fraction(9, 10) ** 44
    assert samples_needed(1000, Fraction(99, 100)) == 990


def test_certainty_needs_one_more_sample_than_the_honest_steps() -> None:
    """P = 1 needs S - k + 1 samples; P = 0 needs none."""
    assert samples_needed(1000, Fraction(1), 100) == 901
    assert detection_probability(1000, 900, 100) < 1
    assert samples_needed(1000, Fraction(0), 100) == 0


def test_largest_segment_with_many_faked_steps_is_answered_quickly() -> None:
    """Half of 2**20 steps faked at odds 1 - 2**-256 is answered by a few small ratios."""
    target = 1 - Fraction(1, 2**256)
    samples = samples_needed(2**20, target, 2**19)
    assert samples == 256
    assert detection_probability(2**20, samples, 2**19) >= target


# --- Limits and errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: sample_indices(ROOT, BEACON, VERIFIER, 0, 0), "segment_steps"),
        (lambda: sample_indices(ROOT, BEACON, VERIFIER, 2**20 + 1, 1), "segment_steps"),
        (lambda: sample_indices(ROOT, BEACON, VERIFIER, True, 1), "segment_steps"),
        (lambda: sample_indices(ROOT, BEACON, VERIFIER, 10, 11), "samples"),
        (lambda: sample_indices(ROOT, BEACON, VERIFIER, 10, -1), "samples"),
        (lambda: sample_indices(ROOT[:31], BEACON, VERIFIER, 10, 1), "commitment_root"),
        (lambda: sample_indices(ROOT, BEACON + b"\0", VERIFIER, 10, 1), "beacon"),
        (lambda: sample_indices(ROOT, BEACON.hex(), VERIFIER, 10, 1), "beacon"),  # type: ignore[arg-type]
        (lambda: sample_indices(ROOT, BEACON, "0x1234", 10, 1), "verifier"),
        (
            lambda: sample_indices(
                ROOT, BEACON, "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", 10, 1
            ),
            "verifier",
        ),
        (lambda: samples_needed(10, 0.99), "detection_probability"),  # type: ignore[arg-type]
        (lambda: samples_needed(10, Fraction(101, 100)), "detection_probability"),
        (lambda: samples_needed(10, Fraction(-1, 100)), "detection_probability"),
        (lambda: samples_needed(10, Fraction(1, 2**256 + 1)), "detection_probability"),
        (lambda: samples_needed(10, Fraction(1, 2), 0), "faked_min"),
        (lambda: samples_needed(10, Fraction(1, 2), 11), "faked_min"),
        (lambda: detection_probability(10, 11, 1), "samples"),
        (lambda: detection_probability(10, 1, 11), "faked"),
        (lambda: detection_probability(2**20, 2**17, 2**18), "samples"),
    ],
)
def test_out_of_range_input_is_refused_naming_the_field(call: object, field: str) -> None:
    """Bad sizes, counts, hashes, addresses and probabilities raise InvalidInput with the field."""
    assert callable(call)
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.field == field


def test_exact_odds_past_the_term_limit_are_still_given_when_certain() -> None:
    """Huge sample and fake counts that must overlap answer 1 without computing any ratio."""
    assert miss_terms_max < 2**19
    assert detection_probability(2**20, 2**19 + 1, 2**19) == 1


# --- uniform_subset: the same draw keyed by any 32-byte seed ------------------------------


def _reference_subset(seed: bytes, n: int, k: int) -> list[int]:
    """The spec's partial Fisher-Yates, on a full list, keyed directly by `seed`."""
    words: list[int] = []
    counter = 0
    deck = list(range(n))
    for i in range(k):
        size = n - i
        mask = 2 ** len(bin(size - 1)[2:]) - 1 if size > 1 else 0
        while True:
            if not words:
                block = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
                counter += 1
                words.extend(int.from_bytes(block[j : j + 4], "big") for j in range(0, 32, 4))
            x = words.pop(0) & mask
            if x < size:
                break
        deck[i], deck[i + x] = deck[i + x], deck[i]
    return sorted(deck[:k])


SUBSET_VECTORS = [
    (sample_seed(ZERO, ZERO, ZERO_VERIFIER), 10, 3, [0, 2, 5]),
    (ROOT, 2**32, 5, [691701950, 952885781, 2360485257, 2849432832, 3497703202]),
    (ROOT, 1797, 8, [190, 517, 533, 1040, 1087, 1238, 1280, 1416]),
    (ROOT, 6, 6, [0, 1, 2, 3, 4, 5]),
    (ROOT, 1, 1, [0]),
    (ROOT, 5, 0, []),
]


@pytest.mark.parametrize(("seed", "n", "k", "expected"), SUBSET_VECTORS)
def test_uniform_subset_known_answers(seed: bytes, n: int, k: int, expected: list[int]) -> None:
    """Pinned subsets (specs/proof.md §1.3) match the module and the plain reference."""
    assert uniform_subset(seed, n, k) == expected
    if n <= 2000:
        assert _reference_subset(seed, n, k) == expected


@_PROPERTY
@given(_bytes32, st.integers(1, 3000), st.data())
def test_uniform_subset_agrees_with_the_reference_and_the_sampling_rule(
    seed: bytes, n: int, data: st.DataObject
) -> None:
    """For random seeds the subset is the reference's, distinct, sorted and in range."""
    k = data.draw(st.integers(0, n))
    subset = uniform_subset(seed, n, k)
    assert subset == _reference_subset(seed, n, k)
    assert subset == sorted(set(subset)) and len(subset) == k
    assert all(0 <= i < n for i in subset)


def test_sample_indices_is_uniform_subset_of_the_sample_seed() -> None:
    """The sampling rule is uniform_subset keyed by the sample seed."""
    seed = sample_seed(ROOT, BEACON, VERIFIER)
    assert sample_indices(ROOT, BEACON, VERIFIER, 1000, 43) == uniform_subset(seed, 1000, 43)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: uniform_subset(ROOT[:31], 10, 1), "seed"),
        (lambda: uniform_subset(ROOT, 0, 0), "n"),
        (lambda: uniform_subset(ROOT, subset_range_max + 1, 1), "n"),
        (lambda: uniform_subset(ROOT, 10, 11), "k"),
        (lambda: uniform_subset(ROOT, 2**32, subset_size_max + 1), "k"),
        (lambda: uniform_subset(ROOT, 10, -1), "k"),
    ],
)
def test_uniform_subset_refuses_out_of_range_input(call: object, field: str) -> None:
    """A short seed, an empty range or a k outside 0..min(n, limit) names its field."""
    assert callable(call)
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.field == field

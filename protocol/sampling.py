"""Which steps of a segment a verifier re-executes, and how many.

A segment of S steps has S transitions (state i to state i + 1, i in 0..S-1). A provider
that fakes k of them escapes only if no sampled transition is a faked one. Samples are
drawn uniformly *without* replacement, so the detection probability is hypergeometric:

    P(detect | k faked, s samples) = 1 - C(S - k, s) / C(S, s) = 1 - C(S - s, k) / C(S, k)

computed here with integers and `Fraction`, so that a decision never hangs on a float.

The sampled indices are a pure function of the commitment root, a beacon the provider
cannot know before its commitment is recorded, and the verifier's address; the algorithm
is specified byte by byte in `specs/compute_sampling_fees.md` so that a contract or a
browser can reproduce it.
"""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction

from protocol.errors import InvalidInput
from protocol.keys import address_to_bytes

SAMPLE_DOMAIN = b"blacktail/sample/v1"
ROOT_BYTES = 32
BEACON_BYTES = 32
# Re-executing a step costs a verifier about as much as training it did, and the index
# draw keeps O(samples) state, so both are bounded: 2**20 steps is far more than any
# segment a lease deadline allows, and it keeps every drawn range within a 20-bit mask.
segment_steps_max = 2**20

# A target's denominator is bounded so that the answer stays cheap to find exactly: with
# 1 - P >= 2**-256 the miss odds (at most e**(-s*k/S)) reach the target while
# min(s, k) < sqrt(177 * S), about 13,600 at the largest S, and galloping evaluates at most
# twice that, so every ratio `samples_needed` computes has fewer than `miss_terms_max`
# terms. No real target needs odds finer than 2**-256.
probability_denominator_max = 2**256
# The exact miss odds are a ratio of binomials with min(samples, faked) terms; past this
# they run to hundreds of thousands of bits and a single call to seconds of CPU, which an
# API caller must not be able to ask for.
miss_terms_max = 2**16
# `uniform_subset` draws from ranges of up to 2**32 (a job's examples; a 32-bit word still
# covers every value) and keeps O(k) state, bounded as a job's batch and a segment's
# sample count are.
SUBSET_SEED_BYTES = 32
subset_range_max = 2**32
subset_size_max = 2**20

_WORD_BYTES = 4
_WORDS_PER_BLOCK = 32 // _WORD_BYTES
_sha256 = hashlib.sha256


def detection_probability(segment_steps: int, samples: int, faked: int) -> Fraction:
    """Return P(at least one of `faked` faked transitions is among `samples` drawn), exactly."""
    _check_steps(segment_steps)
    _check_count(samples, "samples", 0, segment_steps)
    _check_count(faked, "faked", 0, segment_steps)
    if samples + faked > segment_steps:
        # Fewer unfaked transitions than samples: some sample must land on a faked one.
        return Fraction(1)
    if min(samples, faked) > miss_terms_max:
        raise InvalidInput(
            f"samples and faked: the exact odds of {samples} samples against {faked} faked "
            f"steps need more than {miss_terms_max} terms; lower one of them",
            field="samples" if samples <= faked else "faked",
        )
    missed, total = _miss_ratio(segment_steps, samples, faked)
    return 1 - Fraction(missed, total)


def samples_needed(segment_steps: int, detection_probability: Fraction, faked_min: int = 1) -> int:
    """Return the fewest samples that catch `faked_min` faked transitions with the target odds.

    The answer is the smallest s in 0..S with P(detect | faked_min faked, s samples) >= the
    target; it always exists because s = S samples every transition. With faked_min = 1
    the miss probability is (S - s) / S, so the answer is exactly ceil(P * S).
    """
    _check_steps(segment_steps)
    target = _check_probability(detection_probability, "detection_probability")
    _check_count(faked_min, "faked_min", 1, segment_steps)
    if target == 0:
        return 0
    if target == 1:
        # Certainty needs more samples than there are unfaked transitions to hide among.
        return segment_steps - faked_min + 1
    n, d = target.numerator, target.denominator

    def meets(samples: int) -> bool:
        # detect >= n / d  <=>  missed / total <= (d - n) / d, cross-multiplied to stay exact.
        missed, total = _miss_ratio(segment_steps, samples, faked_min)
        return missed * d <= (d - n) * total

    # Galloping then bisection: the miss odds fall as samples grow, and galloping never
    # evaluates more than twice the answer, which keeps every exact ratio small (see
    # `probability_denominator_max`). s = S always meets a target below 1.
    lo, hi = 1, 1
    while not meets(hi):
        lo = hi + 1
        hi = min(2 * hi, segment_steps)
    while lo < hi:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def sample_seed(commitment_root: bytes, beacon: bytes, verifier: str) -> bytes:
    """Return SHA-256(domain || commitment root || beacon || verifier's 20 address bytes)."""
    _check_bytes(commitment_root, "commitment_root", ROOT_BYTES)
    _check_bytes(beacon, "beacon", BEACON_BYTES)
    verifier_bytes = address_to_bytes(verifier, "verifier")
    return _sha256(SAMPLE_DOMAIN + commitment_root + beacon + verifier_bytes).digest()


def sample_indices(
    commitment_root: bytes, beacon: bytes, verifier: str, segment_steps: int, samples: int
) -> list[int]:
    """Return the sorted transition indices this verifier re-executes: uniform, distinct."""
    seed = sample_seed(commitment_root, beacon, verifier)
    _check_steps(segment_steps)
    _check_count(samples, "samples", 0, segment_steps)
    return _partial_shuffle(seed, segment_steps, samples)


def uniform_subset(seed: bytes, n: int, k: int) -> list[int]:
    """Return k distinct integers of 0..n-1, drawn from `seed` as `sample_indices` draws, sorted.

    The same word stream and partial Fisher-Yates as the sampling rule (specs/
    compute_sampling_fees.md §2), keyed by any 32-byte seed: the training batch of a step
    is `uniform_subset` of a seed derived from the job's seed and the step number
    (specs/proof.md), so any single step's batch is known without replaying the others.
    """
    _check_bytes(seed, "seed", SUBSET_SEED_BYTES)
    _check_count(n, "n", 1, subset_range_max)
    _check_count(k, "k", 0, min(n, subset_size_max))
    return _partial_shuffle(seed, n, k)


def _partial_shuffle(seed: bytes, n: int, k: int) -> list[int]:
    """The first k entries of a Fisher-Yates shuffle of 0..n-1 driven by `seed`, sorted."""
    if k == n:
        # Every index is drawn; the shuffle below would return the same set.
        return list(range(n))
    stream = _WordStream(seed)
    # Partial Fisher-Yates over the virtual array [0, 1, ..., n - 1]. Only the positions
    # a swap has touched are stored, so memory is O(k) rather than O(n).
    moved: dict[int, int] = {}
    for i in range(k):
        j = i + stream.below(n - i)
        moved[i], moved[j] = moved.get(j, j), moved.get(i, i)
    return sorted(moved[i] for i in range(k))


class _WordStream:
    """SHA-256 in counter mode, read as big-endian 32-bit words, with unbiased draws."""

    __slots__ = ("_block", "_counter", "_position", "_seed")

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._block = b""
        self._position = _WORDS_PER_BLOCK

    def word(self) -> int:
        if self._position == _WORDS_PER_BLOCK:
            self._block = _sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            self._position = 0
        start = self._position * _WORD_BYTES
        self._position += 1
        return int.from_bytes(self._block[start : start + _WORD_BYTES], "big")

    def below(self, bound: int) -> int:
        # Masking to the bit length of bound - 1 and rejecting values >= bound keeps every
        # value in [0, bound) equally likely (a plain `word % bound` would favour the low
        # ones), and rejects fewer than half the words, so the loop ends quickly.
        mask = (1 << (bound - 1).bit_length()) - 1
        while True:
            value = self.word() & mask
            if value < bound:
                return value


def _miss_ratio(segment_steps: int, samples: int, faked: int) -> tuple[int, int]:
    # C(S - k, s) / C(S, s) and C(S - s, k) / C(S, k) are the same number (expand both in
    # factorials); the one with the smaller lower index is the cheaper to compute.
    if samples <= faked:
        return math.comb(segment_steps - faked, samples), math.comb(segment_steps, samples)
    return math.comb(segment_steps - samples, faked), math.comb(segment_steps, faked)


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as a step count is a caller's mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_steps(segment_steps: int) -> None:
    _check_count(segment_steps, "segment_steps", 1, segment_steps_max)


def _check_count(value: int, field: str, lo: int, hi: int) -> None:
    if not _is_int(value):
        raise InvalidInput(f"{field}: expected an integer, got {value!r}", field=field)
    if not lo <= value <= hi:
        raise InvalidInput(f"{field}: {value} is not between {lo} and {hi}", field=field)


def _check_probability(value: object, field: str) -> Fraction:
    # Floats are refused rather than converted: 0.99 is not 99/100, and the sample count
    # must not depend on how a binary float happens to round.
    if isinstance(value, int) and not isinstance(value, bool):
        value = Fraction(value)
    if not isinstance(value, Fraction):
        raise InvalidInput(f"{field}: expected a Fraction, got {value!r}", field=field)
    if not 0 <= value <= 1:
        raise InvalidInput(f"{field}: {value} is not between 0 and 1", field=field)
    if value.denominator > probability_denominator_max:
        raise InvalidInput(f"{field}: the denominator of {value} exceeds 2**256", field=field)
    return value


def _check_bytes(value: object, field: str, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise InvalidInput(f"{field}: expected {length} bytes, got {value!r}", field=field)

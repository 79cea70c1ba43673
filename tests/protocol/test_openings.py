"""Commitments to per-step state hashes and the openings manifest of sampled steps."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import canonical
from protocol.errors import InvalidInput, InvalidProof
from protocol.openings import commitment_root, open_steps, parse_manifest


def hashes(count: int) -> list[bytes]:
    return [hashlib.sha256(b"state %d" % i).digest() for i in range(count)]


def blobs(steps: list[int]) -> dict[int, str]:
    """Blob digests of the states before and after each step."""
    wanted = {s for s in steps} | {s + 1 for s in steps}
    return {s: "0x" + hashlib.sha256(b"blob %d" % s).hexdigest() for s in wanted}


@given(st.integers(1, 64), st.data())
def test_an_honest_manifest_parses_and_every_opening_proves(
    steps: int, data: st.DataObject
) -> None:
    """For any segment length and sample, the manifest a provider builds parses against
    its commitment and carries each sampled transition's two state hashes."""
    states = hashes(steps + 1)
    sample = data.draw(st.lists(st.integers(0, steps - 1), max_size=steps, unique=True))
    manifest = open_steps(states, sample, blobs(sample))
    parsed = parse_manifest(
        manifest.encode(), digest=manifest.digest(), root=commitment_root(states), steps=steps
    )
    assert [o.step for o in parsed.openings] == sorted(sample)
    for opening in parsed.openings:
        assert (opening.state_hash, opening.next_state_hash) == (
            states[opening.step],
            states[opening.step + 1],
        )
    assert (parsed.start_state_hash, parsed.end_state_hash) == (states[0], states[-1])


def test_a_manifest_for_another_commitment_or_with_a_swapped_hash_is_refused() -> None:
    """A manifest is refused when its digest is not the signed one, when it names another
    root, and when a state hash was swapped (its proof no longer reaches the root)."""
    states = hashes(11)
    manifest = open_steps(states, [3, 7], blobs([3, 7]))
    root = commitment_root(states)
    with pytest.raises(InvalidProof):
        parse_manifest(manifest.encode(), digest="0x" + "00" * 32, root=root, steps=10)
    with pytest.raises(InvalidProof):
        parse_manifest(
            manifest.encode(),
            digest=manifest.digest(),
            root=commitment_root(hashes(12)[1:]),
            steps=10,
        )
    document = manifest.to_json()
    document["openings"][0]["next_state_hash"] = "0x" + hashlib.sha256(b"fake").hexdigest()
    forged = canonical.encode(document)
    with pytest.raises(InvalidProof):
        parse_manifest(
            forged, digest="0x" + hashlib.sha256(forged).hexdigest(), root=root, steps=10
        )


def test_malformed_manifests_and_bad_steps_are_invalid_input() -> None:
    """Garbage, unsorted openings and a step outside the segment are refused as input."""
    states = hashes(5)
    root = commitment_root(states)
    for data in (b"[]", b'{"version":"2"}', b"not json"):
        with pytest.raises((InvalidInput, InvalidProof)):
            parse_manifest(data, digest="0x" + hashlib.sha256(data).hexdigest(), root=root, steps=4)
    with pytest.raises(InvalidInput):
        open_steps(states, [4], blobs([4]))
    with pytest.raises(InvalidInput):
        commitment_root(states[:1])

"""The gateway's ProofIndex gives exactly the proofs and roots protocol.merkle gives."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.gateway.proofs import ProofIndex, stored_level_min
from protocol import merkle
from protocol.errors import InvalidInput

# Past two stored levels of subtrees, with odd sizes on either side of each power of two.
SIZE_MAX = 4 * 2**stored_level_min + 5


def _hashes(count: int) -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(count)]


def test_proofs_and_roots_equal_protocol_merkle_for_every_small_tree() -> None:
    """For every size up to SIZE_MAX, grown one leaf at a time, every inclusion proof,
    consistency proof and root equals the one protocol.merkle computes from the leaves."""
    leaves: list[bytes] = []
    index = ProofIndex(leaves)
    for size, leaf in enumerate(_hashes(SIZE_MAX), 1):
        leaves.append(leaf)
        index.extend(size)
        assert index.root(0, size) == merkle.root_from_hashes(leaves)
        for i in range(size):
            assert index.inclusion_proof(i, size) == merkle.inclusion_proof_from_hashes(i, leaves)
        for old in range(size + 1):
            assert index.consistency_proof(old, size) == merkle.consistency_proof_from_hashes(
                old, leaves
            )


@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=6))
def test_growing_in_uneven_steps_gives_the_same_tree(steps: list[int]) -> None:
    """Extending the index by arbitrary steps gives the roots and proofs of the leaves so
    far, for any earlier size too."""
    all_leaves = _hashes(sum(steps))
    leaves: list[bytes] = []
    index = ProofIndex(leaves)
    for step in steps:
        leaves.extend(all_leaves[len(leaves) : len(leaves) + step])
        index.extend(len(leaves))
        size = len(leaves)
        for earlier in {0, size // 3, size // 2, size}:
            assert index.root(0, earlier) == merkle.root_from_hashes(leaves[:earlier])
            if earlier:
                last = earlier - 1
                assert index.inclusion_proof(last, earlier) == merkle.inclusion_proof_from_hashes(
                    last, leaves[:earlier]
                )


def test_sizes_beyond_the_indexed_leaves_are_refused() -> None:
    """An index never answers for leaves it has not indexed, nor shrinks."""
    leaves = _hashes(10)
    index = ProofIndex(leaves)
    index.extend(5)
    with pytest.raises(InvalidInput):
        index.inclusion_proof(0, 6)
    with pytest.raises(InvalidInput):
        index.extend(11)
    with pytest.raises(InvalidInput):
        index.extend(4)

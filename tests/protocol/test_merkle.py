"""The event log's Merkle tree: RFC 6962 hashing, proofs and the incremental root.

Expected values come from outside `protocol.merkle`: hashes written out with hashlib, the
published Certificate Transparency test vectors, and a literal transcription of the RFC 6962
recursive definitions (`_mth`, `_path`, `_proof` below) to compare against on random trees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import InvalidProof
from protocol.merkle import (
    PROOF_HASHES_MAX,
    MerkleAccumulator,
    consistency_proof,
    consistency_proof_from_hashes,
    inclusion_proof,
    inclusion_proof_from_hashes,
    leaf_hash,
    node_hash,
    root,
    root_from_hashes,
    verify_consistency,
    verify_inclusion,
    verify_inclusion_from_hash,
)

# The properties hash whole trees per example, so a wall-clock deadline would only flake.
_PROPERTY = settings(deadline=None, print_blob=True)


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _x(hex_digits: str) -> bytes:
    return bytes.fromhex(hex_digits)


# --- RFC 6962 §2.1 transcribed literally, as the reference for random trees --------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(d: Sequence[bytes]) -> bytes:
    if len(d) == 0:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + _mth(d[:k]) + _mth(d[k:]))


def _path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*_path(m, d[:k]), _mth(d[k:])]
    return [*_path(m - k, d[k:]), _mth(d[:k])]


def _subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*_subproof(m, d[:k], b), _mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), _mth(d[:k])]


def _proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return [] if m in (0, len(d)) else _subproof(m, d, True)


# --- Known answers -------------------------------------------------------------------------

EMPTY_ROOT_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# The Certificate Transparency reference tree (certificate-transparency merkle_tree_test,
# trillian and transparency-dev/merkle): its leaves and the root at every size 0..8.
CT_LEAVES = [
    _x(""),
    _x("00"),
    _x("10"),
    _x("2021"),
    _x("3031"),
    _x("40414243"),
    _x("5051525354555657"),
    _x("606162636465666768696a6b6c6d6e6f"),
]
CT_ROOTS = [
    _x(EMPTY_ROOT_HEX),
    _x("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    _x("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    _x("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    _x("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    _x("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    _x("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    _x("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    _x("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# (leaf index, tree size, audit path), the index counted from 0.
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            _x("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            _x("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _x("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            _x("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            _x("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            _x("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [_x("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            _x("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            _x("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _x("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
# (old size, new size, consistency proof).
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            _x("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            _x("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _x("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            _x("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            _x("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            _x("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            _x("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _x("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            _x("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            _x("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            _x("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    """The root of a tree without leaves is SHA-256 of the empty string."""
    assert root([]).hex() == EMPTY_ROOT_HEX
    assert root_from_hashes([]).hex() == EMPTY_ROOT_HEX
    assert MerkleAccumulator().root().hex() == EMPTY_ROOT_HEX


def test_leaf_and_node_hashes_carry_the_rfc6962_prefixes() -> None:
    """A leaf is hashed behind 0x00 and an interior node behind 0x01."""
    a, b = _h(b"\x00a"), _h(b"\x00b")
    assert leaf_hash(b"a") == a
    assert node_hash(a, b) == _h(b"\x01" + a + b)


def test_small_trees_split_at_the_largest_power_of_two_without_duplicating_odd_nodes() -> None:
    """Roots of 1 to 5 leaves match hand-written RFC 6962 expressions."""
    a, b, c, d, e = (_h(b"\x00" + s) for s in (b"a", b"b", b"c", b"d", b"e"))
    ab = _h(b"\x01" + a + b)
    cd = _h(b"\x01" + c + d)
    abcd = _h(b"\x01" + ab + cd)
    assert root([b"a"]) == a
    assert root([b"a", b"b"]) == ab
    assert root([b"a", b"b", b"c"]) == _h(b"\x01" + ab + c)
    assert root([b"a", b"b", b"c", b"d"]) == abcd
    assert root([b"a", b"b", b"c", b"d", b"e"]) == _h(b"\x01" + abcd + e)


def test_small_tree_proofs_match_hand_written_paths() -> None:
    """Inclusion and consistency proofs in a 5-leaf tree are the RFC 6962 node lists."""
    leaves = [b"a", b"b", b"c", b"d", b"e"]
    a, b, c, d, e = (_h(b"\x00" + s) for s in leaves)
    ab = _h(b"\x01" + a + b)
    cd = _h(b"\x01" + c + d)
    abcd = _h(b"\x01" + ab + cd)
    assert inclusion_proof(2, leaves) == [d, ab, e]
    assert inclusion_proof(4, leaves) == [abcd]
    assert consistency_proof(3, leaves) == [c, d, ab, e]
    assert consistency_proof(4, leaves) == [e]


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_roots_match_the_certificate_transparency_vectors(size: int) -> None:
    """Every prefix of the CT reference tree has the published root."""
    assert root(CT_LEAVES[:size]) == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_inclusion_proofs_match_the_certificate_transparency_vectors(
    index: int, size: int, path: list[bytes]
) -> None:
    """The published audit paths are the ones we generate, and they verify."""
    leaves = CT_LEAVES[:size]
    assert inclusion_proof(index, leaves) == path
    verify_inclusion(leaves[index], index, size, path, CT_ROOTS[size])


@pytest.mark.parametrize(("old_size", "new_size", "path"), CT_CONSISTENCY)
def test_consistency_proofs_match_the_certificate_transparency_vectors(
    old_size: int, new_size: int, path: list[bytes]
) -> None:
    """The published consistency proofs are the ones we generate, and they verify."""
    assert consistency_proof(old_size, CT_LEAVES[:new_size]) == path
    verify_consistency(old_size, new_size, path, CT_ROOTS[old_size], CT_ROOTS[new_size])


# --- Properties ----------------------------------------------------------------------------

_leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=40)


@_PROPERTY
@given(leaves=_leaf_lists)
def test_root_equals_the_recursive_rfc6962_definition(leaves: list[bytes]) -> None:
    """The iterative root agrees with RFC 6962's recursive MTH on random trees."""
    assert root(leaves) == _mth(leaves)


@_PROPERTY
@given(leaves=_leaf_lists, data=st.data())
def test_every_inclusion_proof_verifies_and_matches_the_definition(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """Each leaf's proof is RFC 6962's PATH and verifies against the root."""
    tree_root = root(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1), label="index")
    proof = inclusion_proof(index, leaves)
    assert proof == _path(index, leaves)
    verify_inclusion(leaves[index], index, len(leaves), proof, tree_root)


@_PROPERTY
@given(leaves=st.lists(st.binary(max_size=4), max_size=20))
def test_every_consistency_proof_between_every_pair_of_sizes_verifies(
    leaves: list[bytes],
) -> None:
    """For all old <= new sizes the proof is RFC 6962's PROOF and verifies."""
    roots = [root(leaves[:n]) for n in range(len(leaves) + 1)]
    for new_size in range(len(leaves) + 1):
        for old_size in range(new_size + 1):
            proof = consistency_proof(old_size, leaves[:new_size])
            assert proof == _proof(old_size, leaves[:new_size])
            verify_consistency(old_size, new_size, proof, roots[old_size], roots[new_size])


@_PROPERTY
@given(leaves=st.lists(st.binary(max_size=8), max_size=70))
def test_accumulator_root_equals_root_at_every_prefix(leaves: list[bytes]) -> None:
    """Appending leaf by leaf gives the same root as hashing each prefix whole."""
    accumulator = MerkleAccumulator()
    for n, leaf in enumerate(leaves, start=1):
        assert accumulator.append(leaf) == leaf_hash(leaf)
        assert accumulator.size == n
        assert accumulator.root() == root(leaves[:n])


@_PROPERTY
@given(leaves=st.lists(st.binary(max_size=8), max_size=70), data=st.data())
def test_accumulator_resumed_from_its_frontier_gives_the_same_roots(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """Saving size and frontier mid-log and resuming yields the uninterrupted roots."""
    cut = data.draw(st.integers(0, len(leaves)), label="cut")
    first = MerkleAccumulator()
    for leaf in leaves[:cut]:
        first.append(leaf)
    assert len(first.frontier) == cut.bit_count()
    resumed = MerkleAccumulator.from_frontier(first.size, first.frontier)
    for n in range(cut, len(leaves)):
        resumed.append_hash(leaf_hash(leaves[n]))
        assert resumed.root() == root(leaves[: n + 1])
    assert resumed.size == len(leaves)


@_PROPERTY
@given(leaves=_leaf_lists, data=st.data())
def test_hash_variants_agree_with_the_leaf_variants(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """Functions taking leaf hashes give what the leaf-bytes functions give."""
    hashes = [leaf_hash(leaf) for leaf in leaves]
    index = data.draw(st.integers(0, len(leaves) - 1), label="index")
    assert root_from_hashes(hashes) == root(leaves)
    assert inclusion_proof_from_hashes(index, hashes) == inclusion_proof(index, leaves)
    assert consistency_proof_from_hashes(index, hashes) == consistency_proof(index, leaves)
    verify_inclusion_from_hash(
        hashes[index], index, len(leaves), inclusion_proof(index, leaves), root(leaves)
    )


# --- Tampering -----------------------------------------------------------------------------

_OTHER_HASH = _x("abacaba000000000000000000000000000000000000000000060061e00123456")


@dataclass(frozen=True)
class _Inclusion:
    leaf: bytes
    index: int
    size: int
    proof: list[bytes]
    root: bytes


@dataclass(frozen=True)
class _Consistency:
    old_size: int
    new_size: int
    proof: list[bytes]
    old_root: bytes
    new_root: bytes


def _flip(proof: list[bytes], position: int) -> list[bytes]:
    changed = bytes([proof[position][0] ^ 0x10]) + proof[position][1:]
    return [*proof[:position], changed, *proof[position + 1 :]]


def _good_inclusions() -> list[_Inclusion]:
    cases = [
        _Inclusion(CT_LEAVES[index], index, size, path, CT_ROOTS[size])
        for index, size, path in CT_INCLUSION
        if path
    ]
    leaves = [bytes([n]) * 3 for n in range(13)]
    cases += [
        _Inclusion(leaves[index], index, 13, inclusion_proof(index, leaves), root(leaves))
        for index in (0, 6, 11, 12)
    ]
    return cases


def _good_consistencies() -> list[_Consistency]:
    cases = [
        _Consistency(old, new, path, CT_ROOTS[old], CT_ROOTS[new])
        for old, new, path in CT_CONSISTENCY
        if path
    ]
    leaves = [bytes([n]) * 3 for n in range(13)]
    cases += [
        _Consistency(old, 13, consistency_proof(old, leaves), root(leaves[:old]), root(leaves))
        for old in (1, 3, 4, 8, 12)
    ]
    return cases


_INCLUSION_TAMPERS: dict[str, Callable[[_Inclusion], list[_Inclusion]]] = {
    "flipped byte": lambda c: [replace(c, proof=_flip(c.proof, i)) for i in range(len(c.proof))],
    "dropped last": lambda c: [replace(c, proof=c.proof[:-1])],
    "dropped first": lambda c: [replace(c, proof=c.proof[1:])],
    "added at end": lambda c: [replace(c, proof=[*c.proof, c.root])],
    "added at front": lambda c: [replace(c, proof=[c.root, *c.proof])],
    "inserted": lambda c: [replace(c, proof=[c.proof[0], _OTHER_HASH, *c.proof[1:]])],
    "empty proof": lambda c: [replace(c, proof=[])],
    "wrong index": lambda c: [
        replace(c, index=c.index - 1),
        replace(c, index=c.index + 1),
        replace(c, index=c.index ^ 2),
        replace(c, index=c.size),
    ],
    "wrong size": lambda c: [
        replace(c, size=c.size * 2),
        replace(c, size=c.size // 2),
        replace(c, size=0),
    ],
    "wrong leaf": lambda c: [replace(c, leaf=c.leaf + b"\x00"), replace(c, leaf=b"WrongLeaf")],
    "wrong root": lambda c: [
        replace(c, root=_OTHER_HASH),
        replace(c, root=_h(b"")),
        replace(c, root=c.root[:-1]),
    ],
}

_CONSISTENCY_TAMPERS: dict[str, Callable[[_Consistency], list[_Consistency]]] = {
    "flipped byte": lambda c: [replace(c, proof=_flip(c.proof, i)) for i in range(len(c.proof))],
    "dropped last": lambda c: [replace(c, proof=c.proof[:-1])],
    "dropped first": lambda c: [replace(c, proof=c.proof[1:])],
    "added at end": lambda c: [
        replace(c, proof=[*c.proof, c.old_root]),
        replace(c, proof=[*c.proof, c.new_root]),
    ],
    "added at front": lambda c: [
        replace(c, proof=[c.old_root, *c.proof]),
        replace(c, proof=[c.new_root, *c.proof]),
        replace(c, proof=[c.proof[0], *c.proof]),
    ],
    "empty proof": lambda c: [replace(c, proof=[])],
    "wrong old size": lambda c: [
        replace(c, old_size=c.old_size - 1),
        replace(c, old_size=c.old_size + 1),
        replace(c, old_size=c.old_size ^ 2),
        replace(c, old_size=c.new_size + 1),
    ],
    "wrong new size": lambda c: [
        replace(c, new_size=c.new_size * 2),
        replace(c, new_size=c.new_size // 2),
    ],
    "wrong old root": lambda c: [replace(c, old_root=_OTHER_HASH)],
    "wrong new root": lambda c: [replace(c, new_root=_OTHER_HASH)],
    "swapped roots": lambda c: [replace(c, old_root=c.new_root, new_root=c.old_root)],
}


@pytest.mark.parametrize("tamper", sorted(_INCLUSION_TAMPERS))
def test_tampered_inclusion_proof_is_rejected(tamper: str) -> None:
    """Each kind of change to a good inclusion proof or its claims raises InvalidProof."""
    for good in _good_inclusions():
        verify_inclusion(good.leaf, good.index, good.size, good.proof, good.root)
        for bad in _INCLUSION_TAMPERS[tamper](good):
            with pytest.raises(InvalidProof):
                verify_inclusion(bad.leaf, bad.index, bad.size, bad.proof, bad.root)


@pytest.mark.parametrize("tamper", sorted(_CONSISTENCY_TAMPERS))
def test_tampered_consistency_proof_is_rejected(tamper: str) -> None:
    """Each kind of change to a good consistency proof or its claims raises InvalidProof."""
    for good in _good_consistencies():
        verify_consistency(good.old_size, good.new_size, good.proof, good.old_root, good.new_root)
        for bad in _CONSISTENCY_TAMPERS[tamper](good):
            with pytest.raises(InvalidProof):
                verify_consistency(
                    bad.old_size, bad.new_size, bad.proof, bad.old_root, bad.new_root
                )


# --- Edges and limits ----------------------------------------------------------------------


def test_equal_sizes_need_an_empty_proof_and_equal_roots() -> None:
    """A tree is consistent with itself only by an empty proof and the same root."""
    r = CT_ROOTS[3]
    verify_consistency(3, 3, [], r, r)
    with pytest.raises(InvalidProof):
        verify_consistency(3, 3, [r], r, r)
    with pytest.raises(InvalidProof):
        verify_consistency(3, 3, [], r, CT_ROOTS[4])


def test_empty_old_tree_is_consistent_with_any_tree_by_an_empty_proof() -> None:
    """From size 0 the proof is empty, and any non-empty proof is refused."""
    empty = CT_ROOTS[0]
    assert consistency_proof(0, CT_LEAVES) == []
    verify_consistency(0, 8, [], empty, CT_ROOTS[8])
    verify_consistency(0, 0, [], empty, empty)
    with pytest.raises(InvalidProof):
        verify_consistency(0, 8, [CT_ROOTS[8]], empty, CT_ROOTS[8])


def test_empty_old_tree_must_claim_the_empty_root() -> None:
    """A size-0 checkpoint with any root other than SHA-256 of nothing is refused."""
    with pytest.raises(InvalidProof):
        verify_consistency(0, 8, [], _OTHER_HASH, CT_ROOTS[8])


def test_inclusion_in_an_empty_tree_is_refused() -> None:
    """No leaf is in a tree of size 0, whatever the proof."""
    with pytest.raises(InvalidProof):
        verify_inclusion(b"", 0, 0, [], CT_ROOTS[0])


def test_overlong_proofs_are_refused_before_any_hashing() -> None:
    """A proof longer than PROOF_HASHES_MAX raises InvalidProof naming the limit."""
    long_proof = [_OTHER_HASH] * (PROOF_HASHES_MAX + 1)
    with pytest.raises(InvalidProof, match=str(PROOF_HASHES_MAX)):
        verify_inclusion(b"x", 0, 2**62, long_proof, _OTHER_HASH)
    with pytest.raises(InvalidProof, match=str(PROOF_HASHES_MAX)):
        verify_consistency(3, 2**62, long_proof, _OTHER_HASH, _OTHER_HASH)


def test_proof_hashes_of_the_wrong_length_are_refused() -> None:
    """A proof element that is not 32 bytes raises InvalidProof."""
    index, size, path = CT_INCLUSION[1]
    with pytest.raises(InvalidProof, match="32"):
        verify_inclusion(CT_LEAVES[index], index, size, [*path[:-1], b""], CT_ROOTS[size])


@pytest.mark.parametrize("index", [-1, 3, 4])
def test_inclusion_proof_for_a_missing_leaf_is_a_value_error(index: int) -> None:
    """Asking for the path of a leaf outside the tree raises ValueError."""
    with pytest.raises(ValueError, match="index"):
        inclusion_proof(index, [b"a", b"b", b"c"])


@pytest.mark.parametrize("old_size", [-1, 4])
def test_consistency_proof_from_a_size_outside_the_tree_is_a_value_error(old_size: int) -> None:
    """Asking for consistency from a size beyond the new tree raises ValueError."""
    with pytest.raises(ValueError, match="old size"):
        consistency_proof(old_size, [b"a", b"b", b"c"])


def test_leaf_hashes_of_the_wrong_length_are_a_value_error() -> None:
    """Hash-taking functions refuse anything that is not a 32-byte hash."""
    with pytest.raises(ValueError, match="32"):
        root_from_hashes([_OTHER_HASH, b"short"])
    with pytest.raises(ValueError, match="32"):
        MerkleAccumulator().append_hash(b"short")
    with pytest.raises(ValueError, match="32"):
        node_hash(_OTHER_HASH, b"")


@pytest.mark.parametrize(
    ("size", "frontier"),
    [(3, [_OTHER_HASH]), (4, [_OTHER_HASH, _OTHER_HASH]), (1, [b"short"]), (-1, [])],
)
def test_frontier_that_does_not_fit_its_size_is_refused(size: int, frontier: list[bytes]) -> None:
    """Resuming needs one 32-byte hash per set bit of a non-negative size."""
    with pytest.raises(ValueError):
        MerkleAccumulator.from_frontier(size, frontier)


def test_frontier_is_a_copy_that_cannot_change_the_accumulator() -> None:
    """Mutating the saved frontier leaves the accumulator's root untouched."""
    accumulator = MerkleAccumulator()
    for leaf in CT_LEAVES[:7]:
        accumulator.append(leaf)
    accumulator.frontier.clear()
    assert accumulator.root() == CT_ROOTS[7]

"""The Merkle tree over the event log: RFC 6962 hashing, proofs and an incremental root.

Every event is a leaf of a Certificate Transparency style tree (RFC 6962 §2.1, SHA-256), so
any RFC 6962 / RFC 9162 client can check our inclusion and consistency proofs and we can
check theirs. Callers hand in raw leaf bytes; the 0x00 leaf and 0x01 node prefixes are
applied here, which is what makes a leaf impossible to pass off as an interior node.

Functions named `*_from_hashes` take leaf hashes instead of leaf bytes, for callers that
keep the hashes (the log store, the auditor); the leaf-bytes functions wrap them.
`MerkleAccumulator` keeps the root of a growing log in O(log n) memory.

Generating a proof from bad arguments raises `InvalidInput` (the caller's mistake);
verifying a proof that does not check out raises `InvalidProof` (the prover's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from protocol.errors import InvalidInput, InvalidProof

HASH_BYTES = 32
# Tree sizes are bounded so that every proof fits in PROOF_HASHES_MAX hashes: in a tree
# of at most 2**63 leaves no leaf is deeper than 63, so an inclusion proof has at most 63
# hashes and a consistency proof at most 63 plus the one for the old tree's last subtree.
TREE_SIZE_MAX = 2**63
PROOF_HASHES_MAX = 64

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256

EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    """Return the RFC 6962 hash of one leaf: SHA-256(0x00 || leaf)."""
    return _sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 hash of an interior node: SHA-256(0x01 || left || right)."""
    _check_hash(left, "left")
    _check_hash(right, "right")
    return _sha256(_NODE_PREFIX + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash of the leaves (SHA-256 of nothing for no leaves)."""
    return _subtree_root([leaf_hash(leaf) for leaf in leaves], 0, len(leaves))


def root_from_hashes(hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash of a tree whose leaf hashes are given."""
    _check_hashes(hashes)
    return _subtree_root(hashes, 0, len(hashes))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Return the audit path of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1)."""
    return inclusion_proof_from_hashes(index, [leaf_hash(leaf) for leaf in leaves])


def inclusion_proof_from_hashes(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return the audit path of leaf `index` in the tree whose leaf hashes are given."""
    _check_hashes(hashes)
    size = len(hashes)
    if not 0 <= index < size:
        raise InvalidInput(f"leaf index {index} is outside a tree of {size} leaves", field="index")
    # RFC 6962 §2.1.1 recurses from the root down and appends on the way back up; walking
    # down iteratively and reversing gives the same path, leaf end first.
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            path.append(_subtree_root(hashes, mid, hi))
            hi = mid
        else:
            path.append(_subtree_root(hashes, lo, mid))
            lo = mid
    path.reverse()
    return path


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Return the proof that the first `old_size` leaves are a prefix of `leaves` (§2.1.2)."""
    return consistency_proof_from_hashes(old_size, [leaf_hash(leaf) for leaf in leaves])


def consistency_proof_from_hashes(old_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return the consistency proof from `old_size` to the tree whose leaf hashes are given."""
    _check_hashes(hashes)
    new_size = len(hashes)
    if not 0 <= old_size <= new_size:
        raise InvalidInput(
            f"old size {old_size} is not between 0 and the new size {new_size}", field="old_size"
        )
    if old_size in (0, new_size):
        return []
    # SUBPROOF(m, D[lo:hi], b) of RFC 6962 §2.1.2, unrolled: `m` counts the old leaves
    # within [lo, hi) and `whole` is b, true while the old tree's root is the verifier's
    # own old root and need not be sent.
    path: list[bytes] = []
    lo, hi, m, whole = 0, new_size, old_size, True
    while m != hi - lo:
        mid = lo + _split(hi - lo)
        if m <= mid - lo:
            path.append(_subtree_root(hashes, mid, hi))
            hi = mid
        else:
            path.append(_subtree_root(hashes, lo, mid))
            m -= mid - lo
            lo = mid
            whole = False
    if not whole:
        path.append(_subtree_root(hashes, lo, hi))
    path.reverse()
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise InvalidProof unless `proof` shows `leaf` at `index` in the tree `root` of `size`."""
    verify_inclusion_from_hash(leaf_hash(leaf), index, size, proof, root)


def verify_inclusion_from_hash(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise InvalidProof unless `proof` shows the leaf hash at `index` in the tree `root`."""
    _check_proof_hashes(proof, (leaf_hash, "leaf hash"), (root, "root"))
    _check_size(size, "tree size")
    if not 0 <= index < size:
        raise InvalidProof(f"leaf index {index} is outside a tree of {size} leaves")
    # RFC 9162 §2.1.3.2. `fn` is the node's index at the current level and `sn` the last
    # index at that level; a node that is a right child or the last one of its level with
    # no sibling takes the proof hash on its left.
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise InvalidProof(f"inclusion proof has more than the {len(proof)} hashes needed")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof(f"inclusion proof of {len(proof)} hashes is too short")
    if r != root:
        raise InvalidProof(
            f"inclusion proof of leaf {index} leads to {_hex(r)}, not to the root {_hex(root)}"
        )


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Raise InvalidProof unless `proof` shows the tree `old_root` is a prefix of `new_root`."""
    _check_proof_hashes(proof, (old_root, "old root"), (new_root, "new root"))
    _check_size(old_size, "old size")
    _check_size(new_size, "new size")
    if old_size > new_size:
        raise InvalidProof(f"old size {old_size} is larger than the new size {new_size}")
    if old_size == new_size:
        if proof:
            raise InvalidProof(
                f"a tree is consistent with itself by an empty proof, not {len(proof)}"
            )
        if old_root != new_root:
            raise InvalidProof(
                f"two roots for size {old_size}: {_hex(old_root)} and {_hex(new_root)}"
            )
        return
    if old_size == 0:
        # Stricter than RFC 9162, which ignores the old root here: a size-0 tree has one
        # root, and a checkpoint claiming another is corrupt whatever follows it.
        if old_root != EMPTY_ROOT:
            raise InvalidProof(f"the empty tree's root is {_hex(EMPTY_ROOT)}, not {_hex(old_root)}")
        if proof:
            raise InvalidProof(f"the empty tree is a prefix by an empty proof, not {len(proof)}")
        return
    if not proof:
        raise InvalidProof(f"consistency from {old_size} to {new_size} needs a non-empty proof")
    # RFC 9162 §2.1.4.2. When the old tree is perfect its root is a node of the new tree
    # and the prover leaves it out; the verifier supplies it.
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof(f"consistency proof has more than the {len(proof)} hashes needed")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof(f"consistency proof of {len(proof)} hashes is too short")
    if fr != old_root:
        raise InvalidProof(f"consistency proof leads to old root {_hex(fr)}, not {_hex(old_root)}")
    if sr != new_root:
        raise InvalidProof(f"consistency proof leads to new root {_hex(sr)}, not {_hex(new_root)}")


class MerkleAccumulator:
    """The root of a growing log, kept as the roots of its perfect subtrees (its frontier).

    A tree of `size` leaves is a run of perfect subtrees, one per set bit of `size`, largest
    on the left. Appending merges equal-sized subtrees like a binary counter carries, so an
    append costs O(log n) hashes amortised O(1), and the memory is one hash per set bit.
    """

    __slots__ = ("_frontier", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._frontier: list[bytes] = []

    @classmethod
    def from_frontier(cls, size: int, frontier: Sequence[bytes]) -> MerkleAccumulator:
        """Resume an accumulator saved as its `size` and `frontier`."""
        if not 0 <= size <= TREE_SIZE_MAX:
            raise InvalidInput(f"size {size} is not between 0 and {TREE_SIZE_MAX}", field="size")
        if len(frontier) != size.bit_count():
            raise InvalidInput(
                f"a tree of {size} leaves has {size.bit_count()} frontier hashes, "
                f"not {len(frontier)}",
                field="frontier",
            )
        for position, h in enumerate(frontier):
            _check_hash(h, f"frontier[{position}]")
        accumulator = cls()
        accumulator._size = size
        accumulator._frontier = list(frontier)
        return accumulator

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    @property
    def frontier(self) -> list[bytes]:
        """The perfect subtrees' roots, largest (leftmost) first: a copy, for saving."""
        return list(self._frontier)

    def append(self, leaf: bytes) -> bytes:
        """Append one leaf and return its leaf hash."""
        h = _sha256(_LEAF_PREFIX + leaf).digest()
        self._push(h)
        return h

    def append_hash(self, leaf_hash: bytes) -> None:
        """Append one leaf given by its leaf hash."""
        _check_hash(leaf_hash, "leaf hash")
        self._push(leaf_hash)

    def root(self) -> bytes:
        """Return the Merkle tree hash of the leaves appended so far."""
        frontier = self._frontier
        if not frontier:
            return EMPTY_ROOT
        # RFC 6962 splits at the largest power of two, which is the leftmost subtree, so
        # the root nests to the right: fold from the smallest subtree leftwards.
        r = frontier[-1]
        for h in reversed(frontier[:-1]):
            r = _sha256(_NODE_PREFIX + h + r).digest()
        return r

    def _push(self, h: bytes) -> None:
        if self._size >= TREE_SIZE_MAX:
            raise InvalidInput(f"the log is full at {TREE_SIZE_MAX} leaves", field="size")
        frontier = self._frontier
        # Each trailing set bit of the size is a perfect subtree as large as the one being
        # carried, so the two merge and the carry moves up a level.
        carry = self._size
        while carry & 1:
            h = _sha256(_NODE_PREFIX + frontier.pop() + h).digest()
            carry >>= 1
        frontier.append(h)
        self._size += 1


def _split(n: int) -> int:
    """Return the largest power of two smaller than n (n >= 2), RFC 6962's split point."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """Return the Merkle tree hash of the leaf hashes in [lo, hi), level by level.

    Pairing neighbours and carrying a level's odd last node up unhashed builds the same
    tree as RFC 6962's split at the largest power of two, without recursion.
    """
    if lo == hi:
        return EMPTY_ROOT
    level = list(hashes[lo:hi])
    while len(level) > 1:
        paired = [
            _sha256(_NODE_PREFIX + left + right).digest()
            for left, right in zip(level[0::2], level[1::2], strict=False)
        ]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def _check_hash(h: bytes, name: str) -> None:
    if len(h) != HASH_BYTES:
        raise InvalidInput(f"{name} is {len(h)} bytes, a hash is {HASH_BYTES}", field=name)


def _check_hashes(hashes: Sequence[bytes]) -> None:
    if len(hashes) > TREE_SIZE_MAX:
        raise InvalidInput(f"{len(hashes)} leaves exceed {TREE_SIZE_MAX}", field="leaves")
    for position, h in enumerate(hashes):
        if len(h) != HASH_BYTES:
            raise InvalidInput(
                f"leaf hash {position} is {len(h)} bytes, a hash is {HASH_BYTES}", field="hashes"
            )


def _check_proof_hashes(proof: Sequence[bytes], *named: tuple[bytes, str]) -> None:
    # Bounding the proof before hashing anything keeps a hostile proof from costing more
    # than PROOF_HASHES_MAX hashes.
    if len(proof) > PROOF_HASHES_MAX:
        raise InvalidProof(f"proof has {len(proof)} hashes, at most {PROOF_HASHES_MAX} allowed")
    for position, h in enumerate(proof):
        if len(h) != HASH_BYTES:
            raise InvalidProof(f"proof hash {position} is {len(h)} bytes, not {HASH_BYTES}")
    for h, name in named:
        if len(h) != HASH_BYTES:
            raise InvalidProof(f"{name} is {len(h)} bytes, not {HASH_BYTES}")


def _check_size(size: int, name: str) -> None:
    if not 0 <= size <= TREE_SIZE_MAX:
        raise InvalidProof(f"{name} {size} is not between 0 and {TREE_SIZE_MAX}")


def _hex(h: bytes) -> str:
    return "0x" + h.hex()

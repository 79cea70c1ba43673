"""RFC 6962 proofs over the growing event log, in O(log n) hashes each.

`protocol.merkle` builds a proof from the leaf hashes alone, which hashes about every
leaf of the tree per proof: right for an auditor checking one proof, too slow for a
server answering pages of a million-leaf log. `ProofIndex` also keeps the root of every
perfect subtree of 2**stored_level_min leaves or more (about n / 2**(stored_level_min - 1)
hashes beside the n leaf hashes the log already keeps); a smaller subtree is hashed from
its at most 2**stored_level_min leaves when needed. The proofs are the very bytes
`protocol.merkle` gives (tests/node/gateway/test_proofs.py pins that), so any RFC 6962
client checks them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from protocol import merkle
from protocol.errors import InvalidInput

stored_level_min = 4
# Roots of ranges that are not perfect subtrees (the tree's right edge), kept because a
# page's proofs share them; leaves never change, so a cached root never goes stale.
edge_cache_entries_max = 4096


class ProofIndex:
    """Subtree roots over `leaf_hashes`, a list that only grows (the log's own list)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._leaves = leaf_hashes
        # _levels[j][i]: the root of leaves [i * 2**(K+j), (i+1) * 2**(K+j)), K the minimum.
        self._levels: list[list[bytes]] = []
        self._edges: dict[tuple[int, int], bytes] = {}
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def extend(self, size: int) -> None:
        """Index the leaves up to `size` (which the leaf list must already hold)."""
        with self._lock:
            if not self._size <= size <= len(self._leaves):
                raise InvalidInput(
                    f"size: cannot index {size} leaves ({self._size} indexed, "
                    f"{len(self._leaves)} known)"
                )
            k = stored_level_min
            first = (self._size >> k) + 1
            for count in range(first, (size >> k) + 1):
                # `count` perfect subtrees of 2**k leaves now exist; add the newest, then
                # carry like a binary counter while a level holds an even number.
                node = merkle.root_from_hashes(self._leaves[(count - 1) << k : count << k])
                level = 0
                while True:
                    if level == len(self._levels):
                        self._levels.append([])
                    self._levels[level].append(node)
                    if (count >> level) & 1:
                        break
                    node = merkle.node_hash(self._levels[level][-2], node)
                    level += 1
            self._size = size

    def root(self, lo: int, hi: int) -> bytes:
        """The RFC 6962 root of leaves [lo, hi) taken as a tree of their own."""
        if not 0 <= lo <= hi <= self._size:
            raise InvalidInput(f"range [{lo}, {hi}) is outside the {self._size} indexed leaves")
        return self._root(lo, hi)

    def _root(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return merkle.EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            level = n.bit_length() - 1
            if level >= stored_level_min:
                return self._levels[level - stored_level_min][lo >> level]
            return merkle.root_from_hashes(self._leaves[lo:hi])
        cached = self._edges.get((lo, hi))
        if cached is not None:
            return cached
        split = 1 << ((n - 1).bit_length() - 1)
        value = merkle.node_hash(self._root(lo, lo + split), self._root(lo + split, hi))
        if len(self._edges) >= edge_cache_entries_max:
            self._edges.clear()
        self._edges[(lo, hi)] = value
        return value

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The audit path of leaf `index` in the tree of the first `size` leaves."""
        self._check_size(size)
        if not 0 <= index < size:
            raise InvalidInput(f"leaf index {index} is outside a tree of {size} leaves")
        # The walk of protocol.merkle.inclusion_proof_from_hashes, with indexed roots.
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            mid = lo + _split(hi - lo)
            if index < mid:
                path.append(self._root(mid, hi))
                hi = mid
            else:
                path.append(self._root(lo, mid))
                lo = mid
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, size: int) -> list[bytes]:
        """The proof that the first `old_size` leaves are a prefix of the first `size`."""
        self._check_size(size)
        if not 0 <= old_size <= size:
            raise InvalidInput(f"old size {old_size} is not between 0 and the new size {size}")
        if old_size in (0, size):
            return []
        # The walk of protocol.merkle.consistency_proof_from_hashes, with indexed roots.
        path: list[bytes] = []
        lo, hi, m, whole = 0, size, old_size, True
        while m != hi - lo:
            mid = lo + _split(hi - lo)
            if m <= mid - lo:
                path.append(self._root(mid, hi))
                hi = mid
            else:
                path.append(self._root(lo, mid))
                m -= mid - lo
                lo = mid
                whole = False
        if not whole:
            path.append(self._root(lo, hi))
        path.reverse()
        return path

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise InvalidInput(f"size {size} is beyond the {self._size} indexed leaves")


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): RFC 6962's split point."""
    return 1 << ((n - 1).bit_length() - 1)

"""The auditor's view of the event log: signed tree heads, pages of leaves with their
inclusion proofs, and consistency proofs between sizes.

One `Feed` per gateway process follows the network's own EventLog (the one its beacon
reads), so the log is read from the store once. A tree head is signed once per size and
reused until the log grows: signing is the costly part and a head stays true as long as
the log has that size. Every leaf served is re-hashed and compared with the leaf hash
the tree was built from, so a store changed under a running gateway is caught (500
ledger-corrupted) instead of served.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

from node.gateway.proofs import ProofIndex
from protocol import canonical, merkle
from protocol.application import Network
from protocol.errors import LedgerCorrupted
from protocol.keys import PrivateKey
from protocol.log import EventLog, SignedTreeHead, sign_tree_head


@dataclass(frozen=True, slots=True)
class FeedEntry:
    leaf: dict[str, Any]
    leaf_hash: bytes
    proof: list[bytes]


@dataclass(frozen=True, slots=True)
class FeedPage:
    """Entries from `start`, each proven against `tree_head`."""

    tree_head: SignedTreeHead
    start: int
    entries: list[FeedEntry]

    @property
    def next_position(self) -> int:
        return self.start + len(self.entries)


class Feed:
    def __init__(self, network: Network, operator: PrivateKey) -> None:
        log = network.event_log
        assert isinstance(log, EventLog), "Network.event_log is not an EventLog"
        self.log = log
        self.chain_id = network.chain_id
        self.operator = operator
        self.index = ProofIndex(log.leaf_hashes)
        self._head: SignedTreeHead | None = None
        self._lock = threading.Lock()

    def sync(self) -> int:
        """Read the events recorded since the last call; return the log size."""
        with self._lock:
            size = self.log.sync()
            self.index.extend(size)
            return size

    def head(self) -> SignedTreeHead:
        """The operator's signed head over the whole log as it is now."""
        size = self.sync()
        with self._lock:
            head = self._head
            if head is None or head.size < size:
                root = self.index.root(0, size)
                head = sign_tree_head(
                    self.operator, self.chain_id, size, root, int(time.time() * 1000)
                )
                self._head = head
            return head

    def page(self, start: int, limit: int) -> FeedPage:
        """Up to `limit` entries from position `start` (at most the log size)."""
        head = self.head()
        end = min(start + limit, head.size)
        entries: list[FeedEntry] = []
        leaves = self.log.leaves(start) if end > start else iter(())
        for position, leaf in enumerate(itertools.islice(leaves, end - start), start):
            normal = canonical.normalize(leaf)
            digest = merkle.leaf_hash(canonical.encode_normal(normal))
            if normal["index"] != position or digest != self.log.leaf_hashes[position]:
                raise LedgerCorrupted(
                    f"log position {position} read back differs from the one the tree holds"
                )
            proof = self.index.inclusion_proof(position, head.size)
            entries.append(FeedEntry(normal, digest, proof))
        if len(entries) != end - start:
            raise LedgerCorrupted(f"the store holds fewer than the {end} events the log had")
        return FeedPage(head, start, entries)

    def consistency_proof(self, old_size: int, size: int) -> list[bytes]:
        return self.index.consistency_proof(old_size, size)

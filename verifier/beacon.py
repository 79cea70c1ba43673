"""Checking a commitment's beacon against the operator's signed event log.

The sample a verifier re-executes depends on the commitment's beacon, the log's root just
after the commitment's `Commitment.Recorded` event (specs/compute_sampling_fees.md §3).
The gateway serves it with the commitment; `LogWitness.check` does not take it on the
gateway's word. With n the position of that event and a tree head of size N that the
operator signed for this chain, it checks

1. that leaf n is the `Commitment.Recorded` event of this commitment, with this root
   (the leaf's inclusion proof against the head: GET /events?cursor=n&limit=1), and
2. that the beacon is the root of the log's first n + 1 leaves (the consistency proof
   from size n + 1 to N: GET /tree-head/consistency),

so the sample is the one anyone holding the signed log derives, and a gateway that
served one party another beacon would have signed evidence against itself.

Finding n: the witness follows GET /events from where it stopped, remembering where each
`Commitment.Recorded` leaf is until that commitment gets its verdict or is resolved, so
it holds the positions of the commitments pending network-wide (at most
`positions_max`). Its first check reads the log from the start, at most
`pages_per_check_max` pages a call; later checks read only what is new. Positions are
hints: only the proofs above are trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from protocol import canonical, merkle
from protocol.errors import ProtocolError
from protocol.log import SignedTreeHead
from verifier.errors import InconsistentGateway

RECORDED = "Commitment.Recorded"
# Once a commitment has a verdict (or is resolved without one) nobody samples it again.
_SETTLED = frozenset({"Commitment.Verdict", "Commitment.Resolved"})
page_items = 500
pages_per_check_max = 200
positions_max = 1_000_000


class EventSource(Protocol):
    """The gateway's JSON reads (the gateway client has this method)."""

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any: ...


class LogWitness:
    """Proves commitments' beacons from the signed log of one operator and chain."""

    def __init__(self, source: EventSource, *, operator: str, chain_id: int) -> None:
        self.source = source
        self.operator = operator
        self.chain_id = chain_id
        self._cursor = 0
        self._positions: dict[str, int] = {}

    @property
    def cursor(self) -> int:
        """The log position the witness reads from next."""
        return self._cursor

    def check(self, commitment: str, root: bytes, beacon: bytes) -> None:
        """Raise InconsistentGateway unless `beacon` is the signed log's root just after
        the `Commitment.Recorded` event of `commitment`, whose root is `root`."""
        position = self._find(commitment)
        try:
            page = self.source.get_json("/events", {"cursor": str(position), "limit": 1})
            head = self._head(page["tree_head"])
            item = page["items"][0]
            leaf = item["leaf"]
            if (
                leaf["index"] != position
                or leaf["type"] != RECORDED
                or leaf["id"] != commitment
                or str(leaf["data"]["root"]).lower() != "0x" + root.hex()
            ):
                raise InconsistentGateway(
                    f"log leaf {position} is not the record of commitment {commitment} "
                    "with this root"
                )
            proof = [_bytes32(p) for p in item["proof"]]
            merkle.verify_inclusion(canonical.encode(leaf), position, head.size, proof, head.root)
            answer = self.source.get_json(
                "/tree-head/consistency", {"from": position + 1, "to": head.size}
            )
            consistency = [_bytes32(p) for p in answer["proof"]]
            merkle.verify_consistency(position + 1, head.size, consistency, beacon, head.root)
        except ProtocolError as error:
            raise InconsistentGateway(
                f"the beacon of commitment {commitment} is not the signed log's: {error}"
            ) from None
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise InconsistentGateway(f"event feed: not the documented shape: {error}") from None

    def _head(self, document: Any) -> SignedTreeHead:
        head = SignedTreeHead.from_json(document)
        head.verify(self.operator, self.chain_id)
        return head

    def _find(self, commitment: str) -> int:
        """The log position of the commitment's record, reading on from the cursor."""
        for _ in range(pages_per_check_max):
            if commitment in self._positions:
                break
            if not self._read_page():
                break
        position = self._positions.get(commitment)
        if position is None:
            raise InconsistentGateway(
                f"the record of commitment {commitment} is not in the first {self._cursor} "
                "leaves of the log read so far"
            )
        return position

    def _read_page(self) -> bool:
        """Read the next page of the feed; False once the end of the log was reached."""
        try:
            page = self.source.get_json(
                "/events", {"cursor": str(self._cursor), "limit": page_items}
            )
            items = page["items"]
            for item in items:
                self._note(item["leaf"])
            following = page["next_cursor"]
            size = int(page["tree_head"]["size"])
            self._cursor = int(following) if following is not None else size
        except (KeyError, TypeError, ValueError) as error:
            raise InconsistentGateway(f"event feed: not the documented shape: {error}") from None
        return following is not None

    def _note(self, leaf: Mapping[str, Any]) -> None:
        kind, key = leaf["type"], leaf["id"]
        if kind == RECORDED:
            self._positions[key] = int(leaf["index"])
            if len(self._positions) > positions_max:
                # The oldest pending commitment is the likeliest to have been judged by a
                # verdict this witness missed; forgetting it only costs a failed check.
                del self._positions[next(iter(self._positions))]
        elif kind in _SETTLED:
            self._positions.pop(key, None)


def _bytes32(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 66 or not value.startswith("0x"):
        raise ValueError(f"expected 0x and 32 bytes of hex, got {value!r}")
    return bytes.fromhex(value[2:])

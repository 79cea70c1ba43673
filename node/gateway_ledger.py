"""The ledger as a gateway's API shows it: what the chain's settler and claimants need
(`chain.settlement.Ledger`) when they do not hold the store themselves.

Leaves come from `/events`, whose every page is proven against a signed tree head; this
client checks the proofs' root against the head it was asked for, so a claimant that
rebuilds a claims tree from a gateway's log knows it read the log the head commits to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from node.client import GatewayClient
from protocol import canonical, merkle
from protocol.commands import SignedCommand

events_page_max = 1000


class GatewayLedgerError(RuntimeError):
    """The gateway's log does not hold together (a page that does not prove its leaves)."""


class GatewayLedger:
    """`chain.settlement.Ledger` over a gateway: /health, /tree-head, /events, /commands."""

    def __init__(self, client: GatewayClient) -> None:
        self.client = client
        self._chain_id: int | None = None

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.client.get_json("/health")["chain_id"])
        return self._chain_id

    def head(self) -> tuple[int, bytes]:
        head = self.client.get_json("/tree-head")
        return int(head["size"]), bytes.fromhex(head["root"][2:])

    def leaves(self, size: int) -> Iterator[Mapping[str, Any]]:
        """The first `size` leaves, each checked against its leaf hash."""
        cursor: str | None = None
        seen = 0
        while seen < size:
            params: dict[str, Any] = {"limit": min(events_page_max, size - seen)}
            if cursor is not None:
                params["cursor"] = cursor
            page = self.client.get_json("/events", params)
            if not page["items"]:
                raise GatewayLedgerError(f"the log ended at {seen} events, {size} were asked")
            for item in page["items"]:
                leaf = item["leaf"]
                if "0x" + merkle.leaf_hash(canonical.encode(leaf)).hex() != item["leaf_hash"]:
                    raise GatewayLedgerError(f"event {seen}: its leaf hash does not match")
                yield leaf
                seen += 1
                if seen == size:
                    return
            cursor = page.get("next_cursor")
            if cursor is None:
                raise GatewayLedgerError(f"the log ended at {seen} events, {size} were asked")

    def submit(self, command: SignedCommand) -> Any:
        return self.client.submit(command)

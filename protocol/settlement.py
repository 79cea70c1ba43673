"""Epoch settlement, the ledger's side: what every account may withdraw on-chain, and the
record of each epoch the operator settled (specs/contracts.md, "Settlement").

Withdrawals leave the ledger in two steps: an owner's `WithdrawalRequest` moves funds to
its `pending_withdrawal` bucket, and at the next epoch the operator's `WithdrawalFinalize`
moves them out of the ledger (to the vault's reserve, which is the tokens the Vault holds
for the ledger). An account's *cumulative withdrawable amount* per asset is the sum of every
`WithdrawalFinalize` it ever had; the operator posts the Merkle root of those sums to the
`SettlementDistributor` with the log's tree head, and the account claims the difference
between that sum and what it claimed before. The sums are a pure function of a prefix of
the log, so any auditor recomputes the posted root from the log alone.

`SettleEpoch` records a posted root in the log: the `Settlements` aggregate keeps the
epochs in order (1, 2, 3, …), each with its root, the tree head it was computed at, the
token addresses its leaves name and the transaction that posted it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from protocol.ledger import PENDING_WITHDRAWAL, namespaced_id

SETTLEMENTS_ID = namespaced_id("settlements")


class Settlements(Aggregate):
    """Every settled epoch, in order."""

    @staticmethod
    def create_id() -> UUID:
        return SETTLEMENTS_ID

    @event("Started")
    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    @property
    def last_epoch(self) -> int:
        return len(self.epochs)

    @event("Settled")
    def settled(
        self,
        epoch: int,
        root: str,
        log_size: int,
        log_root: str,
        tokens: dict[str, str],
        chain_ref: str,
    ) -> None:
        self.epochs.append(
            {
                "epoch": epoch,
                "root": root,
                "log_size": log_size,
                "log_root": log_root,
                "tokens": tokens,
                "chain_ref": chain_ref,
            }
        )


@dataclass
class Withdrawals:
    """Per (account, asset): the amounts ever requested and ever finalized (base units)."""

    requested: dict[tuple[str, str], int] = field(default_factory=dict)
    finalized: dict[tuple[str, str], int] = field(default_factory=dict)

    def pending(self) -> dict[tuple[str, str], int]:
        """What waits for the next epoch: requested and not finalized yet (only > 0)."""
        out = {}
        for key, amount in self.requested.items():
            left = amount - self.finalized.get(key, 0)
            if left > 0:
                out[key] = left
        return out


def withdrawals_from_log(
    leaves: Iterable[Mapping[str, Any]], size: int | None = None
) -> Withdrawals:
    """Withdrawal totals from the first `size` leaves of a log (all of them by default).

    Reads the posting sets of accepted receipts: a credit to `pending_withdrawal` is a
    request, a debit from it a finalization (specs/ledger.md), whatever command caused it.
    """
    totals = Withdrawals()
    for position, leaf in enumerate(leaves):
        if size is not None and position >= size:
            break
        if leaf["type"] != "Receipt.Accepted":
            continue
        for account, asset, bucket, side, amount in leaf["data"]["legs"]:
            if bucket != PENDING_WITHDRAWAL:
                continue
            book = totals.requested if side == "C" else totals.finalized
            book[(account, asset)] = book.get((account, asset), 0) + int(amount)
    return totals

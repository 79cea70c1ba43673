"""Epoch settlement: the operator's settler and the claimant's proof.

Each epoch the settler (specs/contracts.md, *Settlement*):
1. finalizes every pending withdrawal on the ledger (`WithdrawalFinalize`, operator-signed,
   with an idempotency key per epoch, account and asset, so a settler restarted mid-way
   finalizes nothing twice);
2. takes the log's tree head after those commands and computes, from that log prefix
   alone, every account's cumulative finalized amount per asset (`protocol.settlement`);
3. posts the Merkle root of the leaves `(account, token, cumulative)` (OpenZeppelin's
   `StandardMerkleTree`, `chain.merkle`) to the `SettlementDistributor` with the tree head;
4. records the epoch in the log (`SettleEpoch`, with the posting transaction).
A settler that stopped between 3 and 4 finds the chain one epoch ahead of the ledger and
records the posted epoch from the contract's state and its `RootPosted` log.

An epoch with no withdrawal ever finalized posts the zero root: the log head is anchored,
and nothing can be claimed against it.

A claimant rebuilds the same tree from the same log prefix (its own replay, or the
gateway's proven `/events`) and claims `cumulative - already claimed` with its proof.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chain.contracts import Sender, SettlementDistributor
from chain.deploy import Deployment
from chain.errors import ChainError
from chain.merkle import StandardMerkleTree
from protocol.application import Network
from protocol.assets import Asset
from protocol.commands import SignedCommand, sign_command
from protocol.keys import PrivateKey
from protocol.log import EventLog
from protocol.settlement import Withdrawals, withdrawals_from_log

LEAF_ENCODING = ("address", "address", "uint256")
ZERO_ROOT = bytes(32)
command_expiry_seconds = 3600
finalize_batch_max = 256


class SettlementError(ChainError):
    """An epoch could not be settled: a refused command, a chain ahead of the ledger."""


class NothingToClaim(SettlementError):
    """The account has no cumulative amount in the epoch's tree, or claimed all of it."""


@dataclass(frozen=True, slots=True)
class EpochReport:
    """What one settled epoch came to."""

    epoch: int
    root: str
    log_size: int
    log_root: str
    accounts: int
    finalized: dict[str, int]  # asset -> base units finalized in this epoch
    tx_hash: str
    recovered: bool = False


def settlement_values(
    withdrawals: Withdrawals, deployment: Deployment
) -> list[tuple[str, str, int]]:
    """The tree's leaves: (account, token, cumulative finalized amount), in a fixed order."""
    return [
        (account, deployment.token_of(Asset(asset)), amount)
        for (account, asset), amount in sorted(withdrawals.finalized.items())
        if amount > 0
    ]


def settlement_tree(withdrawals: Withdrawals, deployment: Deployment) -> StandardMerkleTree | None:
    """The epoch's claims tree, or None when nothing was ever finalized."""
    values = settlement_values(withdrawals, deployment)
    return StandardMerkleTree.of(values, LEAF_ENCODING) if values else None


class Ledger(Protocol):
    """What the settler needs of the ledger: its chain id, its log and a way to submit.
    `NetworkLedger` is the operator's own store; a gateway's API is another
    (`node.gateway_ledger.GatewayLedger`)."""

    @property
    def chain_id(self) -> int: ...

    def head(self) -> tuple[int, bytes]:
        """The log's current size and RFC 6962 root."""
        ...

    def leaves(self, size: int) -> Iterable[Mapping[str, Any]]:
        """The first `size` leaves of the log, in order."""
        ...

    def submit(self, command: SignedCommand) -> Any: ...


class NetworkLedger:
    """The ledger as the operator's store holds it, in process."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.log = EventLog(network)

    @property
    def chain_id(self) -> int:
        return self.network.chain_id

    def head(self) -> tuple[int, bytes]:
        self.log.sync()
        return self.log.size, self.log.root()

    def leaves(self, size: int) -> Iterable[Mapping[str, Any]]:
        for position, leaf in enumerate(self.log.leaves()):
            if position >= size:
                break
            yield leaf

    def submit(self, command: SignedCommand) -> Any:
        return self.network.submit(command)


def recorded_epochs(leaves: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """The `SettleEpoch` messages of a log, by epoch."""
    records: dict[int, Mapping[str, Any]] = {}
    for leaf in leaves:
        data = leaf.get("data", {})
        if leaf.get("type") == "Receipt.Accepted" and data.get("kind") == "SettleEpoch":
            records[int(data["message"]["epoch"])] = data["message"]
    return records


def _key(*parts: object) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


class EpochSettler:
    """The operator's settler: over its own store (`NetworkLedger`) or a gateway's API."""

    def __init__(
        self,
        ledger: Ledger | Network,
        operator: PrivateKey,
        distributor: SettlementDistributor,
        deployment: Deployment,
        sender: Sender,
    ) -> None:
        self.ledger: Ledger = NetworkLedger(ledger) if isinstance(ledger, Network) else ledger
        self.operator = operator
        self.distributor = distributor
        self.deployment = deployment
        self.sender = sender

    def _command(self, kind: str, client_id: str, **fields: Any) -> Any:
        fields.update(
            clientId=client_id,
            nonce=secrets.randbits(128) + 1,
            expiry=int(time.time()) + command_expiry_seconds,
        )
        command = sign_command(self.operator, kind, self.ledger.chain_id, fields)
        try:
            return self.ledger.submit(command)
        except Exception as error:
            # A refused command (ProtocolError in process, a problem from a gateway):
            # the epoch stops here, and a rerun picks it up where it stopped.
            raise SettlementError(f"{kind} {client_id} refused: {error}") from error

    def last_recorded_epoch(self) -> int:
        size, _ = self.ledger.head()
        return max(recorded_epochs(self.ledger.leaves(size)), default=0)

    def settle(self) -> EpochReport:
        """Settle the next epoch (or record one the chain has and the ledger lacks)."""
        recorded = self.last_recorded_epoch()
        on_chain = self.distributor.epoch()
        if on_chain == recorded + 1:
            return self._record_posted(on_chain)
        if on_chain != recorded:
            raise SettlementError(
                f"the distributor is at epoch {on_chain}, the ledger at {recorded}: "
                "this ledger does not belong to this contract"
            )
        epoch = recorded + 1
        size, _ = self.ledger.head()
        pending = withdrawals_from_log(self.ledger.leaves(size)).pending()
        finalized: dict[str, int] = {}
        for (account, asset), amount in sorted(pending.items()):
            self._command(
                "WithdrawalFinalize",
                f"settle-{epoch}-{_key(account, asset)[:40]}",
                account=account,
                asset=asset,
                amount=amount,
                chainRef=f"{self.deployment.chain_id}:epoch:{epoch}",
            )
            finalized[asset] = finalized.get(asset, 0) + amount
        size, log_root = self.ledger.head()
        withdrawals = withdrawals_from_log(self.ledger.leaves(size), size)
        tree = settlement_tree(withdrawals, self.deployment)
        root = bytes.fromhex(tree.root[2:]) if tree is not None else ZERO_ROOT
        receipt = self.distributor.post_root(epoch, root, size, log_root, sender=self.sender)
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        self._record(epoch, root, size, log_root, tx_hash)
        return EpochReport(
            epoch,
            "0x" + root.hex(),
            size,
            "0x" + log_root.hex(),
            len(tree) if tree is not None else 0,
            finalized,
            tx_hash,
        )

    def _record(self, epoch: int, root: bytes, size: int, log_root: bytes, tx_hash: str) -> None:
        self._command(
            "SettleEpoch",
            f"settle-epoch-{epoch}",
            epoch=epoch,
            root="0x" + root.hex(),
            logSize=size,
            logRoot="0x" + log_root.hex(),
            blackToken=self.deployment.black_token,
            usdToken=self.deployment.usd_token,
            chainRef=f"{self.deployment.chain_id}:{tx_hash}",
        )

    def _record_posted(self, epoch: int) -> EpochReport:
        head = self.distributor.head()
        w3 = self.distributor.w3
        posts = [
            p
            for p in self.distributor.root_posts(self.deployment.block_number, w3.eth.block_number)
            if p.epoch == epoch
        ]
        if len(posts) != 1:
            raise SettlementError(f"epoch {epoch}: expected one RootPosted log, found {len(posts)}")
        self._record(epoch, head.root, head.log_size, head.log_root, posts[0].tx_hash)
        return EpochReport(
            epoch,
            "0x" + head.root.hex(),
            head.log_size,
            "0x" + head.log_root.hex(),
            0,
            {},
            posts[0].tx_hash,
            recovered=True,
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """What an account can claim for one token in the current epoch."""

    epoch: int
    account: str
    token: str
    cumulative: int
    claimed: int
    proof: list[str]

    @property
    def amount(self) -> int:
        return self.cumulative - self.claimed


def build_claim(
    leaves: Iterable[Mapping[str, Any]],
    distributor: SettlementDistributor,
    deployment: Deployment,
    account: str,
    asset: Asset,
) -> Claim:
    """The claim of `account` for `asset` against the distributor's current epoch, its tree
    rebuilt from the first `log_size` leaves of the log (checked against the posted root)."""
    head = distributor.head()
    if head.epoch == 0:
        raise NothingToClaim("no epoch has been settled yet")
    withdrawals = withdrawals_from_log(leaves, head.log_size)
    tree = settlement_tree(withdrawals, deployment)
    root = bytes.fromhex(tree.root[2:]) if tree is not None else ZERO_ROOT
    if root != head.root:
        raise SettlementError(
            f"epoch {head.epoch}: the log's first {head.log_size} events give root "
            f"0x{root.hex()}, the contract holds 0x{head.root.hex()}"
        )
    token = deployment.token_of(asset)
    cumulative = withdrawals.finalized.get((account, asset.value), 0)
    claimed = distributor.claimed(account, token)
    if tree is None or cumulative == 0 or cumulative <= claimed:
        raise NothingToClaim(f"{account} has nothing to claim in {asset.value}")
    proof = tree.get_proof((account, token, cumulative))
    return Claim(head.epoch, account, token, cumulative, claimed, proof)

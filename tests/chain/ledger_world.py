"""A ledger beside a deployed chain: the network's operator, its store, the chain watcher
and the epoch settler, for the tests of the chain's two bridges (deposits in, claims out)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from chain.contracts import Sender
from chain.settlement import Claim, EpochReport, EpochSettler, build_claim
from chain.watcher import DepositWatcher
from protocol.application import Network
from protocol.assets import Asset
from protocol.commands import sign_command
from protocol.keys import PrivateKey
from protocol.log import EventLog
from protocol.storage import memory_storage
from tests.chain.conftest import World

LEDGER_CHAIN_ID = 31337


@dataclass
class Bridge:
    """The ledger side: a Network, its operator key, a watcher and a settler."""

    world: World
    network: Network
    operator: PrivateKey
    watcher: DepositWatcher
    settler: EpochSettler
    nonces: list[int] = field(default_factory=lambda: [0])

    def token(self, asset: Asset) -> object:
        return self.world.black if asset is Asset.BLACK else self.world.usd

    def deposit(self, user: LocalAccount, asset: Asset, amount: int) -> None:
        """Mint, approve and deposit on-chain for the user's own ledger account."""
        token = self.token(asset)
        self.world.fund(user, token, amount)  # type: ignore[arg-type]
        self.world.vault.deposit(
            token.address,  # type: ignore[attr-defined]
            amount,
            user.address,
            sender=self.world.sender(user),
        )

    def request_withdrawal(self, user: LocalAccount, asset: Asset, amount: int) -> None:
        self.nonces[0] += 1
        key = PrivateKey.from_bytes(bytes(user.key))
        command = sign_command(
            key,
            "WithdrawalRequest",
            self.network.chain_id,
            {
                "asset": asset.value,
                "amount": amount,
                "clientId": f"withdraw-{self.nonces[0]}",
                "nonce": self.nonces[0],
                "expiry": int(time.time()) + 86400,
            },
        )
        self.network.submit(command)

    def settle(self) -> EpochReport:
        return self.settler.settle()

    def leaves(self) -> list[dict[str, object]]:
        log = EventLog(self.network)
        log.sync()
        return list(log.leaves())

    def claim_of(self, user: LocalAccount, asset: Asset) -> Claim:
        return build_claim(
            self.leaves(), self.world.distributor, self.world.deployment, user.address, asset
        )

    def claim(self, user: LocalAccount, asset: Asset) -> Claim:
        claim = self.claim_of(user, asset)
        self.world.distributor.claim(
            claim.epoch,
            claim.account,
            claim.token,
            claim.cumulative,
            claim.proof,
            sender=self.world.sender(user),
        )
        return claim

    def available(self, user: LocalAccount, asset: Asset) -> int:
        return self.network.balance(user.address, asset)


def bridge(world: World, *, cursor: Path | None = None, confirmations: int = 1) -> Bridge:
    network = Network(memory_storage())
    operator = PrivateKey.from_bytes(bytes(world.operator.key))
    network.initialize(LEDGER_CHAIN_ID, operator.address)
    watcher = DepositWatcher(
        world.vault,
        world.deployment,
        network.submit,
        operator,
        LEDGER_CHAIN_ID,
        confirmations=confirmations,
        cursor_path=cursor,
    )
    settler = EpochSettler(
        network, operator, world.distributor, world.deployment, world.sender(world.operator)
    )
    return Bridge(world, network, operator, watcher, settler)


def users(world: World, count: int) -> Sequence[LocalAccount]:
    return world.users[:count]


__all__ = ["Bridge", "Sender", "bridge", "users"]

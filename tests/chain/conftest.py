"""Shared fixtures of the chain tests: one deployed network per test module on an
in-process py-evm chain, rolled back to a snapshot after every test.

`world` is that network, with separate keys for the admin, the operator and the pauser (so
that a role check is never passed by accident) and a few funded users. `reverts` expects a
`ContractReverted` naming one custom error (and, optionally, some of its arguments).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import TxReceipt

from chain.contracts import BlackToken, Sender, SettlementDistributor, TestUSD, Vault
from chain.deploy import Deployment, deploy_network
from chain.errors import ContractReverted
from chain.evm import ethereum_tester, funded_accounts, in_process_web3
from chain.merkle import StandardMerkleTree

LEAF_ENCODING = ["address", "address", "uint256"]
ACCOUNTS_COUNT = 8
# The tests send with a fixed gas limit: eth-tester estimates gas by a binary search that
# runs the transaction about 25 times (90 ms a transaction instead of 30 ms), and with a
# fixed limit a revert is mined with status 0 and decoded from the receipt, which tests
# that path too. Tests of the estimating path use `world.sender(key, estimate=True)`.
GAS_LIMIT = 5_000_000


@contextlib.contextmanager
def reverts(error: str, **error_args: Any) -> Iterator[pytest.ExceptionInfo[ContractReverted]]:
    """Expects the block to raise `ContractReverted` for custom error `error`, with at
    least the given arguments."""
    with pytest.raises(ContractReverted) as caught:
        yield caught
    assert caught.value.error == error, str(caught.value)
    for name, value in error_args.items():
        assert caught.value.error_args[name] == value, str(caught.value)


@dataclass(frozen=True)
class World:
    """A deployed network and the keys that act on it."""

    w3: Web3
    deployment: Deployment
    black: BlackToken
    usd: TestUSD
    vault: Vault
    distributor: SettlementDistributor
    admin: LocalAccount
    operator: LocalAccount
    pauser: LocalAccount
    users: tuple[LocalAccount, ...]

    def sender(self, account: LocalAccount, *, estimate: bool = False) -> Sender:
        """`account` as a local-key sender, with the tests' fixed gas limit unless `estimate`."""
        sender = Sender.from_key(account)
        return sender if estimate else sender.with_gas_limit(GAS_LIMIT)

    def now(self) -> int:
        """The timestamp of the latest block."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def fund(self, user: LocalAccount, token: BlackToken | TestUSD, amount: int) -> None:
        """Mints `amount` of `token` to `user` and lets the Vault take all of it."""
        token.mint(user.address, amount, sender=self.sender(self.admin))
        token.approve(self.vault.address, amount, sender=self.sender(user))

    def post_epoch(
        self,
        entries: Sequence[tuple[str, str, int]],
        *,
        log_size: int | None = None,
        log_root: bytes | None = None,
    ) -> tuple[StandardMerkleTree, TxReceipt]:
        """Posts the next epoch with the tree of `(account, token, cumulative)` entries and
        a log head that grows by one leaf per epoch unless given."""
        head = self.distributor.head()
        epoch = head.epoch + 1
        tree = StandardMerkleTree.of([list(entry) for entry in entries], LEAF_ENCODING)
        receipt = self.distributor.post_root(
            epoch,
            bytes.fromhex(tree.root[2:]),
            head.log_size + 1 if log_size is None else log_size,
            Web3.keccak(epoch.to_bytes(8, "big")) if log_root is None else log_root,
            sender=self.sender(self.operator),
        )
        return tree, receipt


def deploy_world() -> World:
    """A fresh chain with the network deployed by account 0, operator 1, pauser 2."""
    w3 = in_process_web3(ACCOUNTS_COUNT)
    keys = funded_accounts(ACCOUNTS_COUNT)
    admin, operator, pauser, *users = keys
    deployment = deploy_network(
        w3,
        Sender.from_key(admin).with_gas_limit(GAS_LIMIT),
        operator=operator.address,
        pauser=pauser.address,
    )
    return World(
        w3=w3,
        deployment=deployment,
        black=BlackToken(w3, deployment.black_token),
        usd=TestUSD(w3, deployment.usd_token),
        vault=Vault(w3, deployment.vault),
        distributor=SettlementDistributor(w3, deployment.distributor),
        admin=admin,
        operator=operator,
        pauser=pauser,
        users=tuple(users),
    )


@pytest.fixture(scope="module")
def deployed_world() -> World:
    """One deployed network per test module (deploying costs about a second)."""
    return deploy_world()


@pytest.fixture
def world(deployed_world: World) -> Iterator[World]:
    """The module's network, rolled back after the test to the state it had before."""
    tester = ethereum_tester(deployed_world.w3)
    snapshot = tester.take_snapshot()
    yield deployed_world
    tester.revert_to_snapshot(snapshot)

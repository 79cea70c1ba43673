"""The whole bridge against a real JSON-RPC node: hardhat on 127.0.0.1, started and stopped
by the test, driven through web3's HTTP provider. Deploy, deposit (plain and with permit),
watch, withdraw, settle and claim, exactly as on py-evm."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from eth_account import Account
from web3 import HTTPProvider, Web3

from chain.contracts import BlackToken, Sender, SettlementDistributor, TestUSD, Vault
from chain.deploy import deploy_network
from chain.hardhat_node import HardhatNode
from protocol.assets import Asset
from protocol.audit import audit_lines
from protocol.log import write_export
from tests.chain.conftest import GAS_LIMIT, World
from tests.chain.hardhat_fixture import hardhat_node_fixture
from tests.chain.ledger_world import bridge

hardhat_node = hardhat_node_fixture(scope="module")
BLACK = 10**18


@pytest.fixture(scope="module")
def rpc_world(hardhat_node: HardhatNode) -> Iterator[World]:
    """The network deployed on the hardhat node by its first account."""
    w3 = Web3(HTTPProvider(hardhat_node.url, request_kwargs={"timeout": 30}))
    keys = [Account.from_key(account.private_key) for account in hardhat_node.accounts]
    admin, operator, pauser, *users = keys
    deployment = deploy_network(
        w3,
        Sender.from_key(admin).with_gas_limit(GAS_LIMIT),
        operator=operator.address,
        pauser=pauser.address,
    )
    yield World(
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


def test_deploy_deposit_settle_claim_over_json_rpc(rpc_world: World) -> None:
    """Deposits reach the ledger once, a withdrawal settles and is claimed, the log audits."""
    world = rpc_world
    assert world.w3.eth.chain_id == 31337
    b = bridge(world, confirmations=2)
    alice, bob = world.users[0], world.users[1]
    b.deposit(alice, Asset.BLACK, 8 * BLACK)
    token = world.usd
    token.mint(bob.address, 9_000_000, sender=world.sender(world.admin))
    permit = token.sign_permit(bob, world.vault.address, 9_000_000, int(time.time()) + 3600)
    world.vault.deposit_with_permit(
        token.address, 9_000_000, bob.address, permit, sender=world.sender(bob)
    )
    # The last deposit has one confirmation: it waits for a block on top of it.
    assert [c.deposit.account for c in b.watcher.poll()] == [alice.address]
    world.black.mint(world.admin.address, 1, sender=world.sender(world.admin))
    assert [c.deposit.account for c in b.watcher.poll()] == [bob.address]
    assert b.available(alice, Asset.BLACK) == 8 * BLACK
    assert b.available(bob, Asset.USD) == 9_000_000
    b.request_withdrawal(alice, Asset.BLACK, 3 * BLACK)
    b.request_withdrawal(bob, Asset.USD, 4_000_000)
    report = b.settle()
    assert report.accounts == 2 and world.distributor.head().log_size == report.log_size
    assert b.claim(alice, Asset.BLACK).amount == 3 * BLACK
    assert b.claim(bob, Asset.USD).amount == 4_000_000
    assert world.black.balance_of(alice.address) == 3 * BLACK
    assert world.usd.balance_of(bob.address) == 4_000_000
    handle = io.BytesIO()
    write_export(b.network, b.operator, handle)
    assert audit_lines(handle.getvalue().splitlines(), workers=0).ok

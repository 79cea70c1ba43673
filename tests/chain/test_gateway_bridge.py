"""The chain's bridges through a running gateway instead of the store: the watcher posts
deposits to /commands, the settler reads /events and /tree-head, and a claimant rebuilds
its proof from the gateway's proven log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.contracts import BlackToken, Sender, SettlementDistributor, Vault
from chain.deploy import deploy_network
from chain.evm import funded_accounts, in_process_web3
from chain.settlement import EpochSettler, build_claim
from chain.watcher import DepositWatcher
from node.gateway_ledger import GatewayLedger
from protocol.assets import Asset
from protocol.commands import sign_command
from protocol.keys import PrivateKey
from tests.chain.conftest import GAS_LIMIT
from tests.gateway_server import RunningGateway, run_gateway

BLACK = 10**18


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("bridge-gw"), workers=2) as running:
        yield running


def test_deposit_settle_and_claim_through_the_gateway(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """The operator's key signs for the gateway's ledger and posts roots on the chain."""
    client = gateway.client()
    ledger = GatewayLedger(client)
    operator = PrivateKey.load(gateway.data_dir / "operator.pem")
    w3 = in_process_web3()
    admin, user_account = funded_accounts(2)
    deployment = deploy_network(
        w3, Sender.from_key(admin).with_gas_limit(GAS_LIMIT), operator=operator.address
    )
    admin_sender = Sender.from_key(admin).with_gas_limit(GAS_LIMIT)
    w3.eth.send_transaction({"from": admin.address, "to": operator.address, "value": 10**18})
    black = BlackToken(w3, deployment.black_token)
    vault = Vault(w3, deployment.vault)
    distributor = SettlementDistributor(w3, deployment.distributor)
    user = Sender.from_key(user_account).with_gas_limit(GAS_LIMIT)
    black.mint(user_account.address, 5 * BLACK, sender=admin_sender)
    black.approve(vault.address, 5 * BLACK, sender=user)
    vault.deposit(black.address, 5 * BLACK, user_account.address, sender=user)
    watcher = DepositWatcher(
        vault,
        deployment,
        ledger.submit,
        operator,
        ledger.chain_id,
        confirmations=1,
        cursor_path=tmp_path / "cursor.json",
    )
    assert len(watcher.poll()) == 1
    key = PrivateKey.from_bytes(bytes(user_account.key))
    client.submit(
        sign_command(
            key,
            "WithdrawalRequest",
            ledger.chain_id,
            {
                "asset": "BLACK",
                "amount": 2 * BLACK,
                "clientId": "gw-w-1",
                "nonce": 1,
                "expiry": int(time.time()) + 600,
            },
        )
    )
    settler = EpochSettler(
        ledger,
        operator,
        distributor,
        deployment,
        Sender.from_key(operator.secret_bytes()).with_gas_limit(GAS_LIMIT),
    )
    report = settler.settle()
    assert report.epoch == 1 and report.finalized == {"BLACK": 2 * BLACK}
    assert settler.last_recorded_epoch() == 1
    size = distributor.head().log_size
    claim = build_claim(
        ledger.leaves(size), distributor, deployment, user_account.address, Asset.BLACK
    )
    distributor.claim(
        claim.epoch, claim.account, claim.token, claim.cumulative, claim.proof, sender=user
    )
    assert black.balance_of(user_account.address) == 2 * BLACK
    balances = client.get_json(f"/accounts/{user_account.address}/balances")["balances"]
    assert {(b["asset"], b["bucket"]): b["amount"] for b in balances}[
        ("BLACK", "available")
    ] == 3 * BLACK

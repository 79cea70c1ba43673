"""`blacktail chain deploy|watch|settle|status` and `blacktail claim` against a hardhat
node on 127.0.0.1: the operator's and a user's whole path through the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3

from chain.contracts import BlackToken, Sender, Vault
from chain.deploy import Deployment
from chain.hardhat_node import HardhatNode
from node.cli import main
from protocol.application import Network
from protocol.commands import sign_command
from protocol.keys import PrivateKey
from protocol.storage import sqlite_storage
from tests.chain.hardhat_fixture import hardhat_node_fixture

hardhat_node = hardhat_node_fixture(scope="module")
BLACK = 10**18


def run(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, dict | list)
    return parsed  # type: ignore[return-value]


def test_the_operator_and_a_user_go_from_deposit_to_claim_on_the_command_line(
    hardhat_node: HardhatNode, tmp_path: Path
) -> None:
    """Deploy, deposit, watch, withdraw, settle, claim: each step by its command."""
    rpc = hardhat_node.url
    data = tmp_path / "node"
    CliRunner().invoke(main, ["ledger", "init", "--data-dir", str(data)], catch_exceptions=False)
    operator = PrivateKey.load(data / "operator.pem")
    w3 = Web3(HTTPProvider(rpc))
    # The operator key is new: a funded account pays for its gas.
    _send_eth(w3, Account.from_key(hardhat_node.accounts[0].private_key), operator.address)
    deployment_file = tmp_path / "deployment.json"
    deployed = run(
        "chain",
        "deploy",
        "--rpc",
        rpc,
        "--key",
        str(data / "operator.pem"),
        "--out",
        str(deployment_file),
    )
    assert deployed["vault"]
    deployment = Deployment.from_json(deployment_file.read_text())
    user_account = Account.from_key(hardhat_node.accounts[5].private_key)
    user_pem = tmp_path / "user.pem"
    PrivateKey.from_bytes(bytes(user_account.key)).save(user_pem)
    black = BlackToken(w3, deployment.black_token)
    black.mint(user_account.address, 6 * BLACK, sender=Sender.from_key(operator.secret_bytes()))
    black.approve(deployment.vault, 6 * BLACK, sender=Sender.from_key(user_account))
    Vault(w3, deployment.vault).deposit(
        deployment.black_token,
        6 * BLACK,
        user_account.address,
        sender=Sender.from_key(user_account),
    )
    common = ["--rpc", rpc, "--deployment", str(deployment_file), "--data-dir", str(data)]
    credited = run("chain", "watch", *common, "--confirmations", "1", "--once")
    assert [row["amount"] for row in credited] == [6 * BLACK]  # type: ignore[index, union-attr]
    network = Network(sqlite_storage(data))
    try:
        network.submit(
            sign_command(
                PrivateKey.load(user_pem),
                "WithdrawalRequest",
                network.chain_id,
                {
                    "asset": "BLACK",
                    "amount": 2 * BLACK,
                    "clientId": "w-1",
                    "nonce": 1,
                    "expiry": int(time.time()) + 600,
                },
            )
        )
    finally:
        network.close()
    settled = run("chain", "settle", *common)
    assert settled["epoch"] == 1 and settled["accounts"] == 1
    claimed = run("claim", *common, "--key", str(user_pem), "--asset", "BLACK")
    assert claimed["amount"] == 2 * BLACK
    assert black.balance_of(user_account.address) == 2 * BLACK
    status = run("chain", "status", "--rpc", rpc, "--deployment", str(deployment_file))
    assert status["epoch"] == 1 and status["vault_black"] == 4 * BLACK
    export = tmp_path / "log.jsonl"
    exported = CliRunner().invoke(
        main, ["log", "export", "--data-dir", str(data), "--out", str(export)]
    )
    assert exported.exit_code == 0, exported.output
    anchored = run(
        "chain", "anchor", "--rpc", rpc, "--deployment", str(deployment_file), str(export)
    )
    assert anchored["ok"] is True and anchored["epochs"] == [1]


def _send_eth(w3: Web3, funder: LocalAccount, to: str) -> None:
    signed = funder.sign_transaction(
        {
            "to": to,
            "value": 10 * 10**18,
            "gas": 21_000,
            "gasPrice": w3.eth.gas_price,
            "nonce": w3.eth.get_transaction_count(funder.address),
            "chainId": w3.eth.chain_id,
        }
    )
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    assert receipt["status"] == 1

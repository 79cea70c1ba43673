"""chain.hardhat_node: a real hardhat JSON-RPC node on 127.0.0.1, reached through web3's
HTTP provider, started and stopped by the tests (skipped without node/npm unless CI or
BLACKTAIL_REQUIRE_NODE=1, where they fail)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from web3 import Web3

from chain.hardhat_node import (
    ACCOUNT_BALANCE_WEI,
    CHAIN_ID,
    HardhatNode,
    HardhatNodeError,
    ToolchainMissing,
    derive_accounts,
    missing_toolchain,
    port_is_free,
    start_hardhat_node,
)
from tests.chain.hardhat_fixture import hardhat_node_fixture, toolchain_unavailable

PROJECT_ROOT = Path(__file__).resolve().parents[2]
receipt_timeout_seconds = 30
# How long a node orphaned by a killed parent may outlive it: the watchdog's SIGTERM, or
# its SIGKILL after stop_timeout_seconds.
orphan_gone_seconds = 30
child_start_timeout_seconds = 120

hardhat_node = hardhat_node_fixture()


def _require_toolchain() -> None:
    problem = missing_toolchain()
    if problem is not None:
        toolchain_unavailable(f"no hardhat node: {problem}")


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    # A zombie leader still counts in its group; it is dead all the same.
    stat = Path(f"/proc/{pgid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_node_answers_on_loopback_with_the_configured_chain(hardhat_node: HardhatNode) -> None:
    """web3 over HTTP reaches the node on 127.0.0.1 and reads chain id 31337 and a Prague block."""
    w3 = Web3(Web3.HTTPProvider(hardhat_node.url))
    assert hardhat_node.url.startswith("http://127.0.0.1:")
    assert w3.is_connected()
    assert w3.eth.chain_id == hardhat_node.chain_id == CHAIN_ID
    # requestsHash (EIP-7685) is in block headers from Prague on.
    assert "requestsHash" in w3.eth.get_block("latest")


def test_every_derived_account_is_funded_on_the_node(hardhat_node: HardhatNode) -> None:
    """The accounts derived from the mnemonic are the node's, each prefunded."""
    w3 = Web3(Web3.HTTPProvider(hardhat_node.url))
    assert hardhat_node.accounts == derive_accounts()
    assert [account.address for account in hardhat_node.accounts] == w3.eth.accounts
    assert w3.eth.get_balance(hardhat_node.accounts[-1].address) == ACCOUNT_BALANCE_WEI


def test_signed_value_transfer_is_mined_with_status_1(hardhat_node: HardhatNode) -> None:
    """A transfer signed locally with a funded key is automined and moves the value."""
    w3 = Web3(Web3.HTTPProvider(hardhat_node.url))
    sender, recipient = hardhat_node.accounts[0], hardhat_node.accounts[1]
    value_wei = 10**18
    before = w3.eth.get_balance(recipient.address)
    base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
    transaction = {
        "type": 2,
        "chainId": hardhat_node.chain_id,
        "nonce": w3.eth.get_transaction_count(sender.address),
        "to": recipient.address,
        "value": value_wei,
        "gas": 21_000,
        "maxPriorityFeePerGas": 10**9,
        "maxFeePerGas": 2 * base_fee + 10**9,
    }
    signed = w3.eth.account.sign_transaction(transaction, sender.private_key)
    transaction_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(transaction_hash, timeout=receipt_timeout_seconds)
    assert receipt["status"] == 1
    assert receipt["from"] == sender.address
    assert w3.eth.get_balance(recipient.address) == before + value_wei


def test_stopped_node_frees_its_port_and_process_group() -> None:
    """After stop() nothing listens on the port, the process group is gone, the log deleted."""
    _require_toolchain()
    node = start_hardhat_node()
    port, pid, log_dir = node.port, node.pid, node.log_path.parent
    assert port is not None and not port_is_free(port)
    node.stop()
    node.stop()  # A second stop does nothing.
    assert port_is_free(port)
    assert _group_gone(pid)
    assert not log_dir.exists()
    assert not node.running


def test_node_on_a_taken_port_fails_with_the_log_tail() -> None:
    """Asking for a port in use raises HardhatNodeError quoting hardhat's EADDRINUSE."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _require_toolchain()
        node = HardhatNode(port)
        try:
            node.start()
        except HardhatNodeError as error:
            assert "EADDRINUSE" in error.log_tail
        else:
            node.stop()
            pytest.fail(f"a node started on port {port}, which was in use")
    assert not node.running


def test_missing_hardhat_or_node_raises_toolchain_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without node_modules, or without node on PATH, start() raises ToolchainMissing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_node = bin_dir / "node"
    fake_node.write_text("#!/bin/sh\nexit 1\n")
    fake_node.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ToolchainMissing, match="npm ci"):
        HardhatNode(project_root=tmp_path).start()
    fake_node.unlink()
    with pytest.raises(ToolchainMissing, match="node is not on PATH"):
        HardhatNode().start()


@pytest.mark.slow
def test_python_m_chain_hardhat_node_check_prints_the_node() -> None:
    """`python -m chain.hardhat_node --check --json --port 0` starts, describes, stops a node."""
    _require_toolchain()
    result = subprocess.run(
        [sys.executable, "-m", "chain.hardhat_node", "--check", "--json", "--port", "0"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=child_start_timeout_seconds,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["chain_id"] == CHAIN_ID
    assert facts["accounts"][0]["address"] == derive_accounts()[0].address
    assert port_is_free(int(facts["url"].rsplit(":", 1)[1]))


@pytest.mark.slow
def test_node_of_a_killed_parent_is_ended_by_the_watchdog() -> None:
    """When the process that started a node is SIGKILLed, the watchdog ends the node's group."""
    _require_toolchain()
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from chain.hardhat_node import start_hardhat_node\n"
            "node = start_hardhat_node()\n"
            "print(node.pid, node.port, node.log_path.parent, flush=True)\n"
            "time.sleep(600)\n",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    if not line:
        pytest.fail("the parent process exited before starting its node (see its stderr)")
    pid_text, port_text, log_dir = line.split()
    pid, port = int(pid_text), int(port_text)
    deadline = time.monotonic() + orphan_gone_seconds
    while time.monotonic() < deadline and not (_group_gone(pid) and port_is_free(port)):
        time.sleep(0.1)
    assert _group_gone(pid), f"hardhat node group {pid} outlived its killed parent"
    assert port_is_free(port)
    while time.monotonic() < deadline and Path(log_dir).exists():
        time.sleep(0.1)
    assert not Path(log_dir).exists()

"""An in-process EVM for tests and the demo: web3 over eth-tester's py-evm backend.

The chain runs the Prague fork (the contracts are compiled for it) and mines one block per
transaction. Its funded accounts have the well-known private keys 1, 2, 3, ... (as
eth-tester's own defaults do), so the same accounts can send transactions either unlocked
(`eth_sendTransaction`) or signed locally with `funded_accounts()`.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, Web3

ACCOUNTS_COUNT = 10
ACCOUNTS_MAX = 1000
# Each funded account starts with 1,000,000 ether (eth-tester's default), plenty for gas.


def funded_accounts(count: int = ACCOUNTS_COUNT) -> list[LocalAccount]:
    """The keys of the first `count` funded accounts of `in_process_web3(count)`."""
    if not 1 <= count <= ACCOUNTS_MAX:
        raise ValueError(f"count: expected 1 to {ACCOUNTS_MAX}, got {count}")
    return [Account.from_key(index.to_bytes(32, "big")) for index in range(1, count + 1)]


def in_process_web3(accounts_count: int = ACCOUNTS_COUNT) -> Web3:
    """A Web3 on a fresh in-process py-evm chain with `accounts_count` funded accounts."""
    if not 1 <= accounts_count <= ACCOUNTS_MAX:
        raise ValueError(f"accounts_count: expected 1 to {ACCOUNTS_MAX}, got {accounts_count}")
    genesis_state = PyEVMBackend.generate_genesis_state(num_accounts=accounts_count)
    tester = EthereumTester(backend=PyEVMBackend(genesis_state=genesis_state))
    return Web3(EthereumTesterProvider(tester))


def ethereum_tester(w3: Web3) -> EthereumTester:
    """The eth-tester behind an in-process Web3 (for snapshots and time travel)."""
    provider = w3.provider
    if not isinstance(provider, EthereumTesterProvider):
        raise TypeError(f"not an in-process chain: {type(provider).__name__}")
    tester: EthereumTester = provider.ethereum_tester
    return tester

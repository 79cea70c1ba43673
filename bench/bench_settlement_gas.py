"""On-chain gas of BlackTail's contracts, and of settling jobs in epochs against paying each.

Gas is measured on the in-process py-evm chain (Prague rules, as on mainnet) from the
receipts of real transactions, so the figures are exact and do not vary between runs:
- one line per operation of `measure_operations` (deployments, deposits, root posts,
  claims at proof depth 10 and 20), the same operations `tests/chain/test_gas.py` holds
  against chain/gas-snapshot.json;
- gas per settled job when one epoch settles `--jobs` jobs for `--accounts` accounts: one
  root post plus one claim per account, each with its proof in the real tree, divided by
  the jobs. The baseline, in the same run, pays each job with its own ERC-20 transfer, so
  the ratio is how many times cheaper the epoch is. Two epochs are run: the first (every
  account claims, and receives the token, for the first time) and a steady one (the same
  accounts again, as in every later epoch).

A proof of depth 20 needs a tree of at least 2^19 + 1 leaves, which takes half a minute to
build in Python; since the contract sees only a leaf and its siblings, the depth-10 and
depth-20 claims use a single leaf with fixed pseudo-random siblings, folded into a root as
`MerkleProof` does and checked with `StandardMerkleTree.verify_proof`.

Usage: python bench/bench_settlement_gas.py [--json] [--accounts N] [--jobs N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eth_utils.crypto import keccak
from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import figure, finish, say
from chain.artifacts import CONTRACT_NAMES
from chain.contracts import (
    Sender,
    SettlementDistributor,
    TestUSD,
    Vault,
    deploy_contract,
)
from chain.deploy import Deployment, deploy_network
from chain.evm import funded_accounts, in_process_web3
from chain.merkle import StandardMerkleTree

LEAF_ENCODING = ["address", "address", "uint256"]
# Fixed, far above any operation here: gas used does not depend on the limit, and a fixed
# limit skips eth-tester's slow estimate.
GAS_LIMIT = 8_000_000
ACCOUNTS_COUNT = 6
accounts_max = 100_000
jobs_max = 10_000_000


class Network:
    """A freshly deployed network on an in-process chain, with its keys."""

    def __init__(self) -> None:
        self.w3 = in_process_web3(ACCOUNTS_COUNT)
        keys = funded_accounts(ACCOUNTS_COUNT)
        self.senders = [Sender.from_key(key).with_gas_limit(GAS_LIMIT) for key in keys]
        self.keys = keys
        self.admin = self.senders[0]
        self.deployment: Deployment = deploy_network(self.w3, self.admin)
        self.usd = TestUSD(self.w3, self.deployment.usd_token)
        self.vault = Vault(self.w3, self.deployment.vault)
        self.distributor = SettlementDistributor(self.w3, self.deployment.distributor)
        self.log_size = 0

    def stock(self, amount: int) -> None:
        """Deposits `amount` USD into the Vault from the admin."""
        self.usd.mint(self.admin.address, amount, sender=self.admin)
        self.usd.approve(self.vault.address, amount, sender=self.admin)
        self.vault.deposit(self.usd.address, amount, self.admin.address, sender=self.admin)

    def post(self, root: bytes) -> int:
        """Posts the next epoch with `root` (and a growing log head); returns its gas."""
        epoch = self.distributor.epoch() + 1
        self.log_size += 1000
        receipt = self.distributor.post_root(
            epoch, root, self.log_size, keccak(self.log_size.to_bytes(8, "big")), sender=self.admin
        )
        return receipt["gasUsed"]


def synthetic_proof(value: list[object], depth: int) -> tuple[bytes, list[bytes]]:
    """A root and a proof of `depth` fixed pseudo-random siblings for leaf `value`."""
    # The root of a one-value tree is that value's leaf hash.
    leaf = bytes.fromhex(StandardMerkleTree.of([value], LEAF_ENCODING).root[2:])
    siblings = [keccak(f"sibling {depth} {i}".encode()) for i in range(depth)]
    node = leaf
    for sibling in siblings:
        node = keccak(min(node, sibling) + max(node, sibling))
    root_hex = "0x" + node.hex()
    proof_hex = ["0x" + sibling.hex() for sibling in siblings]
    assert StandardMerkleTree.verify_proof(root_hex, LEAF_ENCODING, value, proof_hex)
    return node, siblings


def measure_operations() -> dict[str, int]:
    """Gas used by each operation, measured in a fixed order on a fresh chain.

    Steady-state figures are measured after a warm-up of the same operation, so that they
    pay no one-off first write (a Vault's first balance, a depositor's first permit nonce,
    the distributor's first epoch). "first" claims are by an account that never claimed and
    holds none of the token (both its claimed record and its balance are new storage);
    "first_holder" by one that already holds the token; "repeat" by one that claimed in an
    earlier epoch and now claims a larger cumulative amount.
    """
    net = Network()
    gas: dict[str, int] = {}
    admin = net.admin
    constructor_args: dict[str, list[object]] = {
        "BlackToken": [admin.address, 10**27],
        "TestUSD": [admin.address],
        "Vault": [admin.address],
        "SettlementDistributor": [admin.address, net.vault.address],
    }
    for name in CONTRACT_NAMES:
        gas[f"deploy.{name}"] = deploy_contract(net.w3, name, constructor_args[name], admin)[
            "gasUsed"
        ]

    depositor = net.senders[1]
    net.usd.mint(depositor.address, 10**12, sender=admin)
    net.usd.approve(net.vault.address, 10**12, sender=depositor)
    net.vault.deposit(net.usd.address, 10**6, depositor.address, sender=depositor)
    receipt = net.vault.deposit(net.usd.address, 10**6, depositor.address, sender=depositor)
    gas["deposit"] = receipt["gasUsed"]

    permitter = net.senders[2]
    net.usd.mint(permitter.address, 10**12, sender=admin)
    # A fixed deadline (in 2106), so the signature, hence the calldata, is the same each run.
    deadline = 2**32
    for label in ("deposit_with_permit.first", "deposit_with_permit"):
        permit = net.usd.sign_permit(net.keys[2], net.vault.address, 10**6, deadline)
        receipt = net.vault.deposit_with_permit(
            net.usd.address, 10**6, permitter.address, permit, sender=permitter
        )
        if label == "deposit_with_permit":
            gas[label] = receipt["gasUsed"]

    net.stock(10**12)
    gas["post_root.first"] = net.post(keccak(b"epoch 1"))
    gas["post_root"] = net.post(keccak(b"epoch 2"))

    holder = Web3.to_checksum_address(keccak(b"holder")[:20])
    net.usd.mint(holder, 1, sender=admin)
    claimer = net.senders[3]
    for depth in (10, 20):
        account = Web3.to_checksum_address(keccak(f"account {depth}".encode())[:20])
        cases = [("first", account, 100), ("repeat", account, 250)]
        if depth == 20:
            cases.append(("first_holder", holder, 100))
        for label, who, cumulative in cases:
            value: list[object] = [who, net.usd.address, cumulative]
            root, proof = synthetic_proof(value, depth)
            net.post(root)
            epoch = net.distributor.epoch()
            receipt = net.distributor.claim(
                epoch, who, net.usd.address, cumulative, proof, sender=claimer
            )
            gas[f"claim.depth{depth}.{label}"] = receipt["gasUsed"]
    return dict(sorted(gas.items()))


def transfer_gas(net: Network) -> tuple[int, int]:
    """Gas of one ERC-20 transfer to an account holding none of the token, then to one
    that holds some (the payer keeps a balance, as a paying treasury would)."""
    payer = net.senders[4]
    net.usd.mint(payer.address, 10**12, sender=net.admin)
    payee = Web3.to_checksum_address(keccak(b"payee")[:20])
    fresh = net.usd.transfer(payee, 10**6, sender=payer)["gasUsed"]
    held = net.usd.transfer(payee, 10**6, sender=payer)["gasUsed"]
    return fresh, held


def settle_epochs(accounts: int, jobs: int) -> tuple[int, int]:
    """Total gas of two epochs that each settle `jobs` jobs among `accounts` accounts: a
    root post and one claim per account with its real proof. Returns (first, steady)."""
    net = Network()
    price = 1_000_000
    # Enough for both epochs: each job pays `price` plus less than 1,000 base units.
    net.stock(2 * jobs * (price + 1_000))
    net.post(keccak(b"warm-up epoch"))
    payees = [Web3.to_checksum_address(keccak(f"payee {i}".encode())[:20]) for i in range(accounts)]
    cumulative = [0] * accounts
    totals = []
    for epoch_index in range(2):
        for job in range(jobs):
            cumulative[job % accounts] += price + job % 1000
        values = [
            [payee, net.usd.address, amount]
            for payee, amount in zip(payees, cumulative, strict=True)
        ]
        tree = StandardMerkleTree.of(values, LEAF_ENCODING)
        total = net.post(bytes.fromhex(tree.root[2:]))
        epoch = net.distributor.epoch()
        claimer = net.senders[5]
        for index, (payee, amount) in enumerate(zip(payees, cumulative, strict=True)):
            proof = tree.get_proof(index)
            receipt = net.distributor.claim(
                epoch, payee, net.usd.address, amount, proof, sender=claimer
            )
            total += receipt["gasUsed"]
            if index % 250 == 249:
                say(f"# epoch {epoch_index + 1}: {index + 1}/{accounts} claims")
        totals.append(total)
    return totals[0], totals[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--accounts", type=int, default=1_000, help="accounts paid per epoch")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs settled per epoch")
    arguments = parser.parse_args()
    if not 1 <= arguments.accounts <= accounts_max:
        parser.error(f"--accounts: expected 1 to {accounts_max}, got {arguments.accounts}")
    if not arguments.accounts <= arguments.jobs <= jobs_max:
        parser.error(f"--jobs: expected {arguments.accounts} to {jobs_max}, got {arguments.jobs}")

    for name, value in measure_operations().items():
        figure(f"gas.{name}", value, "gas")

    accounts, jobs = arguments.accounts, arguments.jobs
    first, steady = settle_epochs(accounts, jobs)
    fresh, held = transfer_gas(Network())
    figure("gas.transfer.to_new_holder", fresh, "gas")
    figure("gas.transfer.to_holder", held, "gas")
    # Paying each job by transfer: the first payment to each account creates its balance.
    per_job_transfers_first = (accounts * fresh + (jobs - accounts) * held) / jobs
    per_job_transfers_steady = held
    label = f"{jobs} jobs, {accounts} accounts"
    figure(
        "gas.settlement_per_job.first_epoch",
        first / jobs,
        f"gas/job ({label})",
        baseline="one ERC-20 transfer per job",
        ratio=per_job_transfers_first / (first / jobs),
    )
    figure(
        "gas.settlement_per_job.steady_epoch",
        steady / jobs,
        f"gas/job ({label})",
        baseline="one ERC-20 transfer per job",
        ratio=per_job_transfers_steady / (steady / jobs),
    )
    figure("gas.transfers_per_job.first_epoch", per_job_transfers_first, "gas/job")
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())

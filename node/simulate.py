"""A realistic random ledger workload, driven through signed commands.

Accounts are funded by operator-signed deposits, then trade a random mix of every ledger
operation: transfers, escrow for jobs (locked by the payer, released to providers with a
platform fee, or refunded), stake, unstake, slashes with a bounty, fees, withdrawal
requests and their finalization. A shadow copy of the balances keeps most commands
affordable; a small share is deliberately not, so that refusals are exercised too.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from protocol.application import CommandResult, Network
from protocol.assets import Asset
from protocol.commands import SignedCommand, sign_command
from protocol.keys import PrivateKey

Signer = Callable[[PrivateKey, str, int, dict[str, Any]], SignedCommand]

# Relative weights of each operation in the mix.
MIX: dict[str, int] = {
    "Deposit": 8,
    "Transfer": 36,
    "EscrowLock": 10,
    "EscrowRelease": 8,
    "EscrowRefund": 3,
    "Stake": 8,
    "Unstake": 4,
    "Slash": 3,
    "Fee": 6,
    "WithdrawalRequest": 8,
    "WithdrawalFinalize": 6,
}
# Share of commands built to be refused (overdrafts), to exercise the refusal path.
refusal_share = 0.02


@dataclass
class SimulationReport:
    commands: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    seconds_signing: float = 0.0
    seconds_applying: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "commands": self.commands,
            "accepted": self.accepted,
            "refused": dict(self.refused),
            "kinds": dict(self.kinds),
            "seconds_signing": round(self.seconds_signing, 3),
            "seconds_applying": round(self.seconds_applying, 3),
            "commands_per_second_applied": round(self.commands / self.seconds_applying)
            if self.seconds_applying
            else None,
        }


class Workload:
    """Generates signed commands for `accounts` keys against a shadow of the ledger."""

    def __init__(
        self,
        operator: PrivateKey,
        chain_id: int,
        accounts: int,
        *,
        seed: int = 0,
        signer: Signer = sign_command,
    ) -> None:
        self.rng = random.Random(seed)
        self.operator = operator
        self.chain_id = chain_id
        self.sign = signer
        self.keys = [
            PrivateKey.from_bytes(self.rng.getrandbits(250).to_bytes(32, "big"))
            for _ in range(accounts)
        ]
        self.available: dict[tuple[str, Asset], int] = {}
        self.stake: dict[tuple[str, Asset], int] = {}
        self.escrow: dict[tuple[str, Asset, str], int] = {}
        self.pending: dict[tuple[str, Asset], int] = {}
        self._counter = 0
        self._run = f"{seed:x}-{self.rng.getrandbits(32):08x}"

    def _message(self, fields: dict[str, Any]) -> dict[str, Any]:
        self._counter += 1
        fields["clientId"] = f"sim-{self._run}-{self._counter}"
        fields["nonce"] = self.rng.getrandbits(64)
        fields["expiry"] = int(time.time()) + 3600
        return fields

    def _amount(self, have: int) -> int:
        if have <= 0 or self.rng.random() < refusal_share:
            return max(have, 0) + 1 + self.rng.randrange(10**6)
        return self.rng.randint(1, have)

    def funding(self) -> Iterator[SignedCommand]:
        """One deposit of each asset for every account."""
        for key in self.keys:
            for asset in Asset:
                yield self._deposit(
                    key.address, asset, self.rng.randint(1000, 5000) * 10**asset.decimals
                )

    def _deposit(self, account: str, asset: Asset, amount: int) -> SignedCommand:
        self.available[(account, asset)] = self.available.get((account, asset), 0) + amount
        message = {
            "account": account,
            "asset": asset.value,
            "amount": amount,
            "chainRef": f"{self.chain_id}:0x{self.rng.getrandbits(256):064x}:0",
        }
        return self.sign(self.operator, "Deposit", self.chain_id, self._message(message))

    def next_command(self) -> SignedCommand:
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        key = self.rng.choice(self.keys)
        me = key.address
        asset = self.rng.choice(list(Asset))
        have = self.available.get((me, asset), 0)
        op, chain = self.operator, self.chain_id
        if kind == "Deposit":
            return self._deposit(me, asset, self.rng.randint(1, 500) * 10**asset.decimals)
        if kind == "Transfer":
            other = self.rng.choice([k for k in self.keys[:8] if k is not key] or self.keys).address
            amount = self._amount(have)
            self._move(self.available, (me, asset), self.available, (other, asset), amount, have)
            return self.sign(
                key,
                kind,
                chain,
                self._message({"to": other, "asset": asset.value, "amount": amount, "memo": "sim"}),
            )
        if kind == "EscrowLock":
            job = f"job-{self.rng.randrange(50)}"
            amount = self._amount(have)
            self._move(self.available, (me, asset), self.escrow, (me, asset, job), amount, have)
            return self.sign(
                key,
                kind,
                chain,
                self._message({"job": job, "asset": asset.value, "amount": amount}),
            )
        if kind in ("EscrowRelease", "EscrowRefund"):
            held = [(k, v) for k, v in self.escrow.items() if v > 0]
            if not held:
                return self.next_command()
            (payer, escrow_asset, job), value = self.rng.choice(held)
            if kind == "EscrowRefund":
                amount = self._amount(value)
                self._move(
                    self.escrow,
                    (payer, escrow_asset, job),
                    self.available,
                    (payer, escrow_asset),
                    amount,
                    value,
                )
                return self.sign(
                    op,
                    kind,
                    chain,
                    self._message(
                        {"payer": payer, "job": job, "asset": escrow_asset.value, "amount": amount}
                    ),
                )
            total = self._amount(value)
            fee = total // 20
            provider = self.rng.choice(self.keys).address
            if total <= value:
                self.escrow[(payer, escrow_asset, job)] = value - total
                self.available[(provider, escrow_asset)] = (
                    self.available.get((provider, escrow_asset), 0) + total - fee
                )
            payouts = [{"account": provider, "amount": total - fee}]
            return self.sign(
                op,
                kind,
                chain,
                self._message(
                    {
                        "payer": payer,
                        "job": job,
                        "asset": escrow_asset.value,
                        "payouts": payouts,
                        "fee": fee,
                    }
                ),
            )
        if kind == "Stake":
            amount = self._amount(have)
            self._move(self.available, (me, asset), self.stake, (me, asset), amount, have)
            return self.sign(
                key, kind, chain, self._message({"asset": asset.value, "amount": amount})
            )
        if kind in ("Unstake", "Slash"):
            staked = self.stake.get((me, asset), 0)
            if staked <= 0:
                return self.next_command()
            amount = self._amount(staked)
            if kind == "Unstake":
                self._move(self.stake, (me, asset), self.available, (me, asset), amount, staked)
                return self.sign(
                    key, kind, chain, self._message({"asset": asset.value, "amount": amount})
                )
            beneficiary = self.rng.choice(
                [k for k in self.keys if k is not key] or self.keys
            ).address
            bounty = amount // 2
            if amount <= staked:
                self.stake[(me, asset)] = staked - amount
                self.available[(beneficiary, asset)] = (
                    self.available.get((beneficiary, asset), 0) + bounty
                )
            return self.sign(
                op,
                kind,
                chain,
                self._message(
                    {
                        "account": me,
                        "asset": asset.value,
                        "amount": amount,
                        "beneficiary": beneficiary,
                        "bounty": bounty,
                        "reason": "sim: failed verification",
                    }
                ),
            )
        if kind == "Fee":
            amount = self._amount(min(have, 10**asset.decimals))
            if amount <= have:
                self.available[(me, asset)] = have - amount
            return self.sign(
                op,
                kind,
                chain,
                self._message(
                    {
                        "account": me,
                        "asset": asset.value,
                        "amount": amount,
                        "reason": "sim: service fee",
                    }
                ),
            )
        if kind == "WithdrawalRequest":
            amount = self._amount(have)
            self._move(self.available, (me, asset), self.pending, (me, asset), amount, have)
            return self.sign(
                key, kind, chain, self._message({"asset": asset.value, "amount": amount})
            )
        pending = self.pending.get((me, asset), 0)
        if pending <= 0:
            return self.next_command()
        amount = self._amount(pending)
        if amount <= pending:
            self.pending[(me, asset)] = pending - amount
        return self.sign(
            op,
            "WithdrawalFinalize",
            chain,
            self._message(
                {
                    "account": me,
                    "asset": asset.value,
                    "amount": amount,
                    "chainRef": f"{chain}:0x{self.rng.getrandbits(256):064x}:1",
                }
            ),
        )

    @staticmethod
    def _move(
        src: dict[Any, int], src_key: Any, dst: dict[Any, int], dst_key: Any, amount: int, have: int
    ) -> None:
        # Mirror only what the ledger will accept, so the shadow never drifts.
        if amount <= have:
            src[src_key] = have - amount
            dst[dst_key] = dst.get(dst_key, 0) + amount


def run(
    app: Network,
    workload: Workload,
    operations: int,
    *,
    batch: int = 64,
    progress: Callable[[int], None] | None = None,
    fund: bool = True,
) -> SimulationReport:
    """Fund every account (unless `fund` is false), then apply `operations` random
    commands in batches of `batch`."""
    report = SimulationReport()
    pending: list[SignedCommand] = []

    def flush() -> None:
        started = time.perf_counter()
        results = app.submit_many(pending)
        report.seconds_applying += time.perf_counter() - started
        for command, result in zip(pending, results, strict=True):
            report.commands += 1
            report.kinds[command.kind] += 1
            if isinstance(result, CommandResult):
                report.accepted += 1
            else:
                report.refused[type(result).__name__] += 1
        if progress is not None:
            progress(len(pending))
        pending.clear()

    def add(command: SignedCommand) -> None:
        pending.append(command)
        if len(pending) >= batch:
            flush()

    if fund:
        for command in workload.funding():
            add(command)
    for _ in range(operations):
        signing = time.perf_counter()
        command = workload.next_command()
        report.seconds_signing += time.perf_counter() - signing
        add(command)
    if pending:
        flush()
    return report

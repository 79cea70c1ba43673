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
        # Shadow balances: (account, asset[, job]) -> base units the ledger should hold.
        self.available: dict[Any, int] = {}
        self.stake: dict[Any, int] = {}
        self.escrow: dict[Any, int] = {}
        self.pending: dict[Any, int] = {}
        self._counter = 0
        self._last_ok = True
        self._run = f"{seed:x}-{self.rng.getrandbits(32):08x}"
        self._makers: dict[str, Callable[[PrivateKey, Asset], SignedCommand | None]] = {
            "Deposit": self._deposit,
            "Transfer": self._transfer,
            "EscrowLock": self._escrow_lock,
            "EscrowRelease": self._escrow_release,
            "EscrowRefund": self._escrow_refund,
            "Stake": self._stake,
            "Unstake": self._unstake,
            "Slash": self._slash,
            "Fee": self._fee,
            "WithdrawalRequest": self._withdrawal_request,
            "WithdrawalFinalize": self._withdrawal_finalize,
        }

    def funding(self) -> Iterator[SignedCommand]:
        """One deposit of each asset for every account."""
        for key in self.keys:
            for asset in Asset:
                amount = self.rng.randint(1000, 5000) * 10**asset.decimals
                yield self._credit_deposit(key.address, asset, amount)

    def next_command(self) -> SignedCommand:
        """A random command; kinds with nothing to act on (no stake to slash) are redrawn."""
        while True:
            kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
            command = self._makers[kind](self.rng.choice(self.keys), self.rng.choice(list(Asset)))
            if command is not None:
                return command

    # -- one maker per kind: update the shadow as the ledger will, then sign ----------------

    def _deposit(self, key: PrivateKey, asset: Asset) -> SignedCommand:
        return self._credit_deposit(
            key.address, asset, self.rng.randint(1, 500) * 10**asset.decimals
        )

    def _credit_deposit(self, account: str, asset: Asset, amount: int) -> SignedCommand:
        _add(self.available, (account, asset), amount)
        chain_ref = f"{self.chain_id}:0x{self.rng.getrandbits(256):064x}:0"
        return self._signed(
            self.operator,
            "Deposit",
            account=account,
            asset=asset,
            amount=amount,
            chainRef=chain_ref,
        )

    def _transfer(self, key: PrivateKey, asset: Asset) -> SignedCommand:
        other = self.rng.choice([k for k in self.keys[:8] if k is not key] or self.keys).address
        amount = self._move(self.available, (key.address, asset), self.available, (other, asset))
        return self._signed(key, "Transfer", to=other, asset=asset, amount=amount, memo="sim")

    def _escrow_lock(self, key: PrivateKey, asset: Asset) -> SignedCommand:
        job = f"job-{self.rng.randrange(50)}"
        amount = self._move(
            self.available, (key.address, asset), self.escrow, (key.address, asset, job)
        )
        return self._signed(key, "EscrowLock", job=job, asset=asset, amount=amount)

    def _escrow_release(self, key: PrivateKey, asset: Asset) -> SignedCommand | None:
        held = [k for k, v in self.escrow.items() if v > 0]
        if not held:
            return None
        payer, escrow_asset, job = where = self.rng.choice(held)
        provider = self.rng.choice(self.keys).address
        total = self._move(self.escrow, where, {}, None)
        fee = total // 20
        if self._last_ok:
            _add(self.available, (provider, escrow_asset), total - fee)
        payouts = [{"account": provider, "amount": total - fee}]
        return self._signed(
            self.operator,
            "EscrowRelease",
            payer=payer,
            job=job,
            asset=escrow_asset,
            payouts=payouts,
            fee=fee,
        )

    def _escrow_refund(self, key: PrivateKey, asset: Asset) -> SignedCommand | None:
        held = [k for k, v in self.escrow.items() if v > 0]
        if not held:
            return None
        payer, escrow_asset, job = where = self.rng.choice(held)
        amount = self._move(self.escrow, where, self.available, (payer, escrow_asset))
        return self._signed(
            self.operator, "EscrowRefund", payer=payer, job=job, asset=escrow_asset, amount=amount
        )

    def _stake(self, key: PrivateKey, asset: Asset) -> SignedCommand:
        amount = self._move(self.available, (key.address, asset), self.stake, (key.address, asset))
        return self._signed(key, "Stake", asset=asset, amount=amount)

    def _unstake(self, key: PrivateKey, asset: Asset) -> SignedCommand | None:
        if self.stake.get((key.address, asset), 0) <= 0:
            return None
        amount = self._move(self.stake, (key.address, asset), self.available, (key.address, asset))
        return self._signed(key, "Unstake", asset=asset, amount=amount)

    def _slash(self, key: PrivateKey, asset: Asset) -> SignedCommand | None:
        if self.stake.get((key.address, asset), 0) <= 0:
            return None
        beneficiary = self.rng.choice([k for k in self.keys if k is not key] or self.keys).address
        amount = self._move(self.stake, (key.address, asset), {}, None)
        bounty = amount // 2 if beneficiary != key.address else 0
        if self._last_ok:
            _add(self.available, (beneficiary, asset), bounty)
        return self._signed(
            self.operator,
            "Slash",
            account=key.address,
            asset=asset,
            amount=amount,
            beneficiary=beneficiary,
            bounty=bounty,
            reason="sim: failed verification",
        )

    def _fee(self, key: PrivateKey, asset: Asset) -> SignedCommand:
        amount = self._move(self.available, (key.address, asset), {}, None, cap=10**asset.decimals)
        return self._signed(
            self.operator,
            "Fee",
            account=key.address,
            asset=asset,
            amount=amount,
            reason="sim: service fee",
        )

    def _withdrawal_request(self, key: PrivateKey, asset: Asset) -> SignedCommand:
        amount = self._move(
            self.available, (key.address, asset), self.pending, (key.address, asset)
        )
        return self._signed(key, "WithdrawalRequest", asset=asset, amount=amount)

    def _withdrawal_finalize(self, key: PrivateKey, asset: Asset) -> SignedCommand | None:
        if self.pending.get((key.address, asset), 0) <= 0:
            return None
        amount = self._move(self.pending, (key.address, asset), {}, None)
        chain_ref = f"{self.chain_id}:0x{self.rng.getrandbits(256):064x}:1"
        return self._signed(
            self.operator,
            "WithdrawalFinalize",
            account=key.address,
            asset=asset,
            amount=amount,
            chainRef=chain_ref,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _move(
        self,
        source: dict[Any, int],
        source_key: Any,
        target: dict[Any, int],
        target_key: Any,
        *,
        cap: int | None = None,
    ) -> int:
        """Pick an amount to take from `source_key` (now and then one too many, to be
        refused) and mirror it into the shadow only if the ledger will accept it."""
        have = source.get(source_key, 0)
        limit = have if cap is None else min(have, cap)
        if limit <= 0 or self.rng.random() < refusal_share:
            amount = have + 1 + self.rng.randrange(10**6)
        else:
            amount = self.rng.randint(1, limit)
        self._last_ok = amount <= have
        if self._last_ok:
            source[source_key] = have - amount
            if target_key is not None:
                _add(target, target_key, amount)
        return amount

    def _signed(self, key: PrivateKey, kind: str, **fields: Any) -> SignedCommand:
        self._counter += 1
        message = {k: v.value if isinstance(v, Asset) else v for k, v in fields.items()}
        message["clientId"] = f"sim-{self._run}-{self._counter}"
        message["nonce"] = self.rng.getrandbits(64)
        message["expiry"] = int(time.time()) + 3600
        return self.sign(key, kind, self.chain_id, message)


def _add(book: dict[Any, int], key: Any, amount: int) -> None:
    book[key] = book.get(key, 0) + amount


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

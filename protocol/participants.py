"""The compute network's participants: providers (GPUs for hire), verifiers, the roster of
verifiers that work is assigned from, and each address's unbonding stake.

Stake itself is money, so it lives in the ledger: an address's BLACK `stake` bucket backs
every role it holds, and `unbonding` holds stake on its way out. These aggregates hold
what is not money: inventories, prices, status, reputation, unbonding release times.
Validation happens in `protocol.compute` before any event here is triggered.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from protocol.ledger import namespaced_id

ACTIVE = "active"
PAUSED = "paused"
JAILED = "jailed"
PROVIDER_STATUSES = (ACTIVE, PAUSED, JAILED)


def provider_id(address: str) -> UUID:
    return namespaced_id("provider", address)


def verifier_id(address: str) -> UUID:
    return namespaced_id("verifier", address)


def bond_id(address: str) -> UUID:
    return namespaced_id("bond", address)


ROSTER_ID = namespaced_id("roster")


def reputation_bps(accepted: int, rejected: int) -> int:
    """Laplace-smoothed share of accepted outcomes, in basis points: a newcomer starts at
    5000 and every outcome moves it, the early ones most."""
    return (accepted + 1) * 10_000 // (accepted + rejected + 2)


class Provider(Aggregate):
    """A GPU owner's offer: hardware, prices per step, status and track record."""

    @staticmethod
    def create_id(address: str) -> UUID:
        return provider_id(address)

    @event("Registered")
    def __init__(
        self,
        address: str,
        device: str,
        gpus: int,
        memory_mb: int,
        benchmark_gflops: int,
        prices: dict[str, int],
    ) -> None:
        self.address = address
        self.device = device
        self.gpus = gpus
        self.memory_mb = memory_mb
        self.benchmark_gflops = benchmark_gflops
        self.prices = dict(prices)
        self.status = ACTIVE
        self.jailed_until = 0
        self.accepted = 0
        self.rejected = 0
        self.leases_lost = 0
        # Committed segments not yet judged: the stake backs them too.
        self.unverified = 0
        # job id -> lease id of the lease this provider holds on it (at most one per job).
        self.leases: dict[str, str] = {}

    @event("Updated")
    def update(
        self, device: str, gpus: int, memory_mb: int, benchmark_gflops: int, prices: dict[str, int]
    ) -> None:
        self.device = device
        self.gpus = gpus
        self.memory_mb = memory_mb
        self.benchmark_gflops = benchmark_gflops
        self.prices = dict(prices)

    @event("StatusChanged")
    def set_status(self, status: str, reason: str, jailed_until: int) -> None:
        self.status = status
        self.jailed_until = jailed_until

    @event("LeaseTaken")
    def take_lease(self, job: str, lease: str) -> None:
        self.leases[job] = lease

    @event("LeaseReturned")
    def return_lease(self, job: str, lease: str, outcome: str) -> None:
        self.leases.pop(job, None)
        if outcome == "expired":
            self.leases_lost += 1
        elif outcome == "committed":
            self.unverified += 1

    @event("Judged")
    def judged(self, commitment: str, accepted: bool) -> None:
        self.unverified = max(0, self.unverified - 1)
        if accepted:
            self.accepted += 1
        else:
            self.rejected += 1

    @property
    def reputation_bps(self) -> int:
        return reputation_bps(self.accepted, self.rejected)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "device": self.device,
            "gpus": self.gpus,
            "memory_mb": self.memory_mb,
            "benchmark_gflops": self.benchmark_gflops,
            "prices": dict(self.prices),
            "status": self.status,
            "jailed_until": self.jailed_until,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "leases_lost": self.leases_lost,
            "unverified": self.unverified,
            "reputation_bps": self.reputation_bps,
            "leases": dict(self.leases),
        }


class Verifier(Aggregate):
    """A staked verifier: re-executes sampled steps and referees disputes."""

    @staticmethod
    def create_id(address: str) -> UUID:
        return verifier_id(address)

    @event("Registered")
    def __init__(self, address: str) -> None:
        self.address = address
        self.status = ACTIVE
        self.verdicts = 0
        self.upheld = 0
        self.overturned = 0
        self.rulings = 0

    @event("Verdicted")
    def verdicted(self, commitment: str, accepted: bool) -> None:
        self.verdicts += 1

    @event("Ruled")
    def ruled(self, dispute: str, fraud: bool) -> None:
        self.rulings += 1

    @event("Judged")
    def judged(self, dispute: str, upheld: bool) -> None:
        if upheld:
            self.upheld += 1
        else:
            self.overturned += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "status": self.status,
            "verdicts": self.verdicts,
            "upheld": self.upheld,
            "overturned": self.overturned,
            "rulings": self.rulings,
        }


class Roster(Aggregate):
    """Every registered verifier, in registration order: the pool work is assigned from."""

    @staticmethod
    def create_id() -> UUID:
        return ROSTER_ID

    @event("Started")
    def __init__(self) -> None:
        self.verifiers: list[str] = []

    @event("VerifierAdded")
    def add(self, address: str) -> None:
        self.verifiers.append(address)


class Bond(Aggregate):
    """An address's unbonding stake: amounts and the time each may be withdrawn."""

    @staticmethod
    def create_id(address: str) -> UUID:
        return bond_id(address)

    @event("Opened")
    def __init__(self, address: str) -> None:
        self.address = address
        # [amount, release_at] in the order unbonded; slashing takes from the newest.
        self.entries: list[list[int]] = []

    @event("Unbonded")
    def unbond(self, amount: int, release_at: int) -> None:
        self.entries.append([amount, release_at])

    @event("Withdrawn")
    def withdraw(self, amount: int, now: int) -> None:
        self.entries = [e for e in self.entries if e[1] > now]

    @event("Slashed")
    def slashed(self, amount: int) -> None:
        left = amount
        while left and self.entries:
            taken = min(left, self.entries[-1][0])
            self.entries[-1][0] -= taken
            left -= taken
            if self.entries[-1][0] == 0:
                self.entries.pop()

    def released(self, now: int) -> int:
        return sum(amount for amount, release_at in self.entries if release_at <= now)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "entries": [{"amount": a, "release_at": t} for a, t in self.entries],
        }

"""Double-entry bookkeeping: buckets, legs, balanced posting sets and the Account aggregate.

Every movement of value is one posting set: legs that debit and credit account buckets,
with debits equal to credits per asset. User buckets are liabilities of the network
(credit-normal: a credit raises them); the vault's `reserve` bucket is the asset side,
the tokens the Vault contract holds (debit-normal). So a deposit debits the reserve and
credits the depositor, and at every moment, per asset,

    sum(credit-normal balances) == reserve == deposits - finalized withdrawals.

No bucket may go below zero, in its normal direction; both rules are checked before an
event is recorded and again by every replay.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from protocol.assets import Asset, parse_amount, parse_asset
from protocol.errors import InsufficientFunds, InvalidInput, LedgerCorrupted, UnbalancedPosting

AVAILABLE = "available"
STAKE = "stake"
PENDING_WITHDRAWAL = "pending_withdrawal"
TREASURY = "treasury"
RESERVE = "reserve"
# Stake on its way out: still slashable until the unbonding delay has passed.
UNBONDING = "unbonding"
ESCROW_PREFIX = "escrow:"
_FIXED_BUCKETS = frozenset({AVAILABLE, STAKE, UNBONDING, PENDING_WITHDRAWAL, TREASURY, RESERVE})
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# System accounts are named, not addressed: no key can sign for them.
TREASURY_ACCOUNT = "treasury"
VAULT_ACCOUNT = "vault"
SYSTEM_ACCOUNTS = frozenset({TREASURY_ACCOUNT, VAULT_ACCOUNT})

# A posting set touches few accounts in practice (a segment payout: payer, provider,
# verifier, treasury); the cap bounds the work one command can cause.
legs_max = 64

_NAMESPACE = UUID("6f1b3a4e-2c0d-5b7a-9e8f-0a1b2c3d4e5f")


class Side(StrEnum):
    DEBIT = "D"
    CREDIT = "C"


def escrow_bucket(job_id: str) -> str:
    """The escrow bucket that holds the budget of job `job_id`."""
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidInput(f"job: {job_id!r} is not 1-64 of [A-Za-z0-9_-]", field="job")
    return ESCROW_PREFIX + job_id


def check_bucket(bucket: str) -> str:
    """Return `bucket` if it names a known bucket, else raise InvalidInput."""
    if bucket in _FIXED_BUCKETS:
        return bucket
    if bucket.startswith(ESCROW_PREFIX) and _JOB_ID.fullmatch(bucket[len(ESCROW_PREFIX) :]):
        return bucket
    raise InvalidInput(f"bucket: unknown bucket {bucket!r}", field="bucket")


def normal_side(bucket: str) -> Side:
    """The side that raises a bucket's balance."""
    return Side.DEBIT if bucket == RESERVE else Side.CREDIT


@dataclass(frozen=True, slots=True)
class Leg:
    """One debit or credit of `amount` base units to one bucket of one account."""

    account: str
    asset: Asset
    bucket: str
    side: Side
    amount: int

    @property
    def effect(self) -> int:
        """The signed change this leg makes to the bucket's balance."""
        return self.amount if self.side is normal_side(self.bucket) else -self.amount

    def to_json(self) -> list[Any]:
        return [self.account, self.asset.value, self.bucket, self.side.value, self.amount]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> Leg:
        """Parse a leg from its event form, validating every field (used by replays)."""
        if not isinstance(data, (list, tuple)) or len(data) != 5:
            raise InvalidInput("leg: expected [account, asset, bucket, side, amount]")
        account, asset, bucket, side, amount = data
        if not isinstance(account, str) or not isinstance(bucket, str) or side not in ("D", "C"):
            raise InvalidInput(f"leg: malformed {data!r}")
        return cls(
            account, parse_asset(asset), check_bucket(bucket), Side(side), parse_amount(amount)
        )


def debit(account: str, asset: Asset, bucket: str, amount: int) -> Leg:
    return Leg(account, asset, bucket, Side.DEBIT, amount)


def credit(account: str, asset: Asset, bucket: str, amount: int) -> Leg:
    return Leg(account, asset, bucket, Side.CREDIT, amount)


def check_balanced(legs: Sequence[Leg]) -> None:
    """Raise unless `legs` is a non-empty, bounded set whose debits equal credits per asset."""
    if not legs:
        raise InvalidInput("posting set has no legs")
    if len(legs) > legs_max:
        raise InvalidInput(f"posting set has {len(legs)} legs, at most {legs_max} allowed")
    debits: dict[Asset, int] = {}
    credits: dict[Asset, int] = {}
    for leg in legs:
        if leg.amount <= 0:
            raise InvalidInput(f"leg amount {leg.amount} is not positive", field="amount")
        totals = debits if leg.side is Side.DEBIT else credits
        totals[leg.asset] = totals.get(leg.asset, 0) + leg.amount
    for asset in debits.keys() | credits.keys():
        if debits.get(asset, 0) != credits.get(asset, 0):
            raise UnbalancedPosting(asset.value, debits.get(asset, 0), credits.get(asset, 0))


def group_by_account(legs: Iterable[Leg]) -> dict[str, list[Leg]]:
    """Legs grouped by account, in first-seen order (the order accounts are saved in)."""
    grouped: dict[str, list[Leg]] = {}
    for leg in legs:
        grouped.setdefault(leg.account, []).append(leg)
    return grouped


def balance_key(asset: str, bucket: str) -> str:
    return f"{asset}/{bucket}"


def next_balances(account: str, balances: Mapping[str, int], legs: Iterable[Leg]) -> dict[str, int]:
    """The new balances of the buckets `legs` touch; raise InsufficientFunds below zero."""
    changed: dict[str, int] = {}
    for leg in legs:
        key = balance_key(leg.asset.value, leg.bucket)
        changed[key] = changed.get(key, balances.get(key, 0)) + leg.effect
    for key, value in changed.items():
        if value < 0:
            asset, bucket = key.split("/", 1)
            have = balances.get(key, 0)
            raise InsufficientFunds(account, asset, bucket, have - value, have)
    return changed


class Account(Aggregate):
    """One ledger account (an address or a system account) and its bucket balances."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return account_id(name)

    @event("Opened")
    def __init__(self, name: str) -> None:
        self.name = name
        # "ASSET/bucket" -> base units; zero balances are dropped to keep state small.
        self.balances: dict[str, int] = {}

    def balance(self, asset: Asset | str, bucket: str = AVAILABLE) -> int:
        return self.balances.get(balance_key(str(asset), bucket), 0)

    def post(self, posting_id: str, legs: Sequence[Leg]) -> None:
        """Apply this account's legs of a posting set, refusing any overdraft."""
        if any(leg.account != self.name for leg in legs):
            raise InvalidInput(f"legs for another account posted to {self.name}")
        next_balances(self.name, self.balances, legs)
        self._posted(posting_id, [leg.to_json() for leg in legs])

    @event("Posted")
    def _posted(self, posting_id: str, legs: list[list[Any]]) -> None:
        # Apply only: validation happened in `post` (and is repeated by every audit).
        for _account, asset, bucket, side, amount in legs:
            key = f"{asset}/{bucket}"
            change = amount if (side == "D") == (bucket == RESERVE) else -amount
            value = self.balances.get(key, 0) + change
            if value < 0:
                # `post` refuses this before recording, so a stored event that does it
                # means a corrupted or forged store: stop, never carry on from it.
                raise LedgerCorrupted(f"{self.name} {key} would be {value} at v{self.version}")
            if value:
                self.balances[key] = value
            else:
                self.balances.pop(key, None)


@functools.lru_cache(maxsize=65536)
def account_id(name: str) -> UUID:
    """The aggregate id of the account named `name` (an address or a system account)."""
    return uuid5(_NAMESPACE, "account:" + name)


def namespaced_id(*parts: str) -> UUID:
    """A deterministic aggregate id for other protocol records (receipts, nonces)."""
    return uuid5(_NAMESPACE, ":".join(parts))

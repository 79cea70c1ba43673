"""The GenAI Hub on the ledger: subscription plans, subscriptions, metered inference
requests and the epochs that share subscription revenue among creators (specs/market.md).

Every inference request is a signed `HubRequest` command, recorded like any other, so
that metering is in the log and an auditor recounts it:
- a caller with an active subscription spends one request of its period's quota (no
  money moves; a request past the quota is refused, `QuotaExhausted`);
- a caller without one pays the listing's per-request price, split at once into the
  platform fee and the creator's rest.

Subscription payments go to one pool, the treasury account's `escrow:hub-pool` bucket.
`CloseHubEpoch` (operator) shares the whole pool among the creators of the hub models in
proportion to the subscribed requests each served since the last close, the platform fee
first; with no requests the pool waits for the next epoch.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from protocol.assets import Asset
from protocol.commands import VerifiedCommand
from protocol.compute import Context, Decision
from protocol.errors import InvalidInput, InvalidTransition, LedgerCorrupted, NotFound
from protocol.fees import BPS_DENOMINATOR, FeeSchedule
from protocol.ledger import (
    AVAILABLE,
    TREASURY,
    TREASURY_ACCOUNT,
    Account,
    Leg,
    account_id,
    credit,
    debit,
    escrow_bucket,
    namespaced_id,
)
from protocol.market import HUB_ROSTER_ID, HubRoster, Listing, split_by_weight

HUB_ID = namespaced_id("hub")
# Subscription revenue waiting for the next epoch's close, per asset.
HUB_POOL = escrow_bucket("hub-pool")
SUBSCRIPTION = "subscription"
PAY_PER_REQUEST = "pay-per-request"

plans_max = 16
period_seconds_min = 3600
period_seconds_max = 366 * 24 * 3600
quota_max = 2**32
# An inference request's inputs: rows of float32 features.
input_rows_max = 1024
input_values_max = 1 << 20


def subscription_id(subscriber: str) -> UUID:
    return namespaced_id("subscription", subscriber)


def meter_id(listing: str) -> UUID:
    return namespaced_id("hub-meter", listing)


def input_digest(rows: Sequence[Sequence[float]]) -> str:
    """The digest a `HubRequest` signs over its inputs: SHA-256 of the row count and the
    row width (uint32, big-endian) and then every value as a float32 (little-endian, row
    by row), as 0x-hex. The values are JSON numbers rounded to the nearest float32."""
    if not rows or not 1 <= len(rows) <= input_rows_max:
        raise InvalidInput(f"inputs: 1 to {input_rows_max} rows", field="inputs")
    width = len(rows[0])
    if width == 0 or any(len(row) != width for row in rows):
        raise InvalidInput("inputs: rows of one non-zero width", field="inputs")
    if len(rows) * width > input_values_max:
        raise InvalidInput(f"inputs: at most {input_values_max} values", field="inputs")
    hasher = hashlib.sha256(struct.pack(">II", len(rows), width))
    packer = struct.Struct(f"<{width}f")
    try:
        for row in rows:
            hasher.update(packer.pack(*row))
    except (OverflowError, struct.error) as error:
        raise InvalidInput(f"inputs: not float32 values ({error})", field="inputs") from None
    return "0x" + hasher.hexdigest()


class QuotaExhausted(InvalidTransition):
    """A subscriber has made every request its period's quota allows."""

    def __init__(self, subscriber: str, quota: int, used: int, resets_at: int, now: int) -> None:
        super().__init__(
            f"{subscriber} has used {used} of its {quota} requests until {resets_at}",
            entity="subscription",
            state="exhausted",
        )
        self.subscriber = subscriber
        self.quota = quota
        self.used = used
        self.resets_at = resets_at
        self.retry_after_seconds = max(1, resets_at - now)


# -- aggregates --------------------------------------------------------------------------------


class Hub(Aggregate):
    """The hub's plans, its subscription pool per asset, and every closed epoch."""

    @staticmethod
    def create_id() -> UUID:
        return HUB_ID

    @event("Started")
    def __init__(self) -> None:
        self.plans: dict[str, dict[str, Any]] = {}
        self.pool: dict[str, int] = {}
        self.epochs: list[dict[str, Any]] = []
        # Per listing: subscribed requests counted by the epochs closed so far.
        self.counted: dict[str, int] = {}

    @property
    def last_epoch(self) -> int:
        return len(self.epochs)

    @event("PlanSet")
    def set_plan(
        self, plan: str, prices: dict[str, int], period_seconds: int, quota: int, active: bool
    ) -> None:
        self.plans[plan] = {
            "plan": plan,
            "prices": dict(prices),
            "period_seconds": period_seconds,
            "quota": quota,
            "active": active,
        }

    @event("PoolFunded")
    def fund(self, asset: str, amount: int, subscriber: str) -> None:
        self.pool[asset] = self.pool.get(asset, 0) + amount

    @event("EpochClosed")
    def close_epoch(
        self,
        epoch: int,
        requests: dict[str, int],
        creators: dict[str, int],
        payouts: dict[str, dict[str, int]],
        fees: dict[str, int],
        at: int,
    ) -> None:
        for listing, count in requests.items():
            self.counted[listing] = self.counted.get(listing, 0) + count
        for asset, paid in payouts.items():
            self.pool[asset] = self.pool.get(asset, 0) - sum(paid.values()) - fees.get(asset, 0)
        self.epochs.append(
            {
                "epoch": epoch,
                "requests": requests,
                "creators": creators,
                "payouts": payouts,
                "fees": fees,
                "carried": {a: v for a, v in sorted(self.pool.items()) if v},
                "at": at,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "plans": [self.plans[name] for name in sorted(self.plans)],
            "pool": dict(sorted(self.pool.items())),
            "last_epoch": self.last_epoch,
        }


class Subscription(Aggregate):
    """A subscriber's current period: its plan, quota and the requests it made."""

    @staticmethod
    def create_id(subscriber: str) -> UUID:
        return subscription_id(subscriber)

    @event("Started")
    def __init__(
        self,
        subscriber: str,
        plan: str,
        asset: str,
        price: int,
        quota: int,
        starts_at: int,
        ends_at: int,
    ) -> None:
        self.subscriber = subscriber
        self.periods = 0
        self.requests_total = 0
        self._start(plan, asset, price, quota, starts_at, ends_at)

    def _start(
        self, plan: str, asset: str, price: int, quota: int, starts_at: int, ends_at: int
    ) -> None:
        self.plan = plan
        self.asset = asset
        self.price = price
        self.quota = quota
        self.starts_at = starts_at
        self.ends_at = ends_at
        self.used = 0
        self.periods += 1

    @event("Renewed")
    def renew(
        self, plan: str, asset: str, price: int, quota: int, starts_at: int, ends_at: int
    ) -> None:
        self._start(plan, asset, price, quota, starts_at, ends_at)

    @event("Used")
    def use(self, listing: str) -> None:
        self.used += 1
        self.requests_total += 1

    def active(self, now: int) -> bool:
        return self.starts_at <= now < self.ends_at

    def to_json(self) -> dict[str, Any]:
        return {
            "subscriber": self.subscriber,
            "plan": self.plan,
            "asset": self.asset,
            "price": self.price,
            "quota": self.quota,
            "used": self.used,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "periods": self.periods,
            "requests_total": self.requests_total,
        }


class HubMeter(Aggregate):
    """The requests one hub listing served: subscribed ones (shared per epoch) and paid
    ones (paid at once), and what the paid ones charged."""

    @staticmethod
    def create_id(listing: str) -> UUID:
        return meter_id(listing)

    @event("Started")
    def __init__(self, listing: str) -> None:
        self.listing = listing
        self.subscribed = 0
        self.paid = 0
        self.charged = 0

    @event("Counted")
    def count(self, caller: str, subscribed: bool, charged: int) -> None:
        if subscribed:
            self.subscribed += 1
        else:
            self.paid += 1
            self.charged += charged

    def to_json(self) -> dict[str, Any]:
        return {
            "listing": self.listing,
            "subscribed": self.subscribed,
            "paid": self.paid,
            "charged": self.charged,
        }


# -- money ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpochSplit:
    """One asset's pool at an epoch's close: the platform fee and each creator's share."""

    creators: Mapping[str, int]
    platform: int

    @property
    def total(self) -> int:
        return sum(self.creators.values()) + self.platform


def epoch_split(
    pool: int, currency: Asset, requests: Mapping[str, int], schedule: FeeSchedule
) -> EpochSplit:
    """Share `pool`: the platform fee ⌊pool · rate / 10,000⌋ (lower in BLACK), the rest among
    creators in proportion to their requests, exactly (`split_by_weight`)."""
    platform = pool * schedule.platform_rate(currency) // BPS_DENOMINATOR
    creators = split_by_weight(pool - platform, requests)
    split = EpochSplit(creators, platform)
    if split.total != pool:
        raise AssertionError(f"epoch split {split} does not divide {pool}")
    return split


# -- the commands ------------------------------------------------------------------------------


def _hub(context: Context) -> Hub | None:
    hub = context.state.get(HUB_ID)
    return hub if isinstance(hub, Hub) else None


def _set_hub_plan(context: Context, command: VerifiedCommand) -> Decision:
    m = command.message
    if not period_seconds_min <= m["periodSeconds"] <= period_seconds_max:
        raise InvalidInput(
            f"periodSeconds: {period_seconds_min} to {period_seconds_max}",
            field="message.periodSeconds",
        )
    if not 1 <= m["quota"] <= quota_max:
        raise InvalidInput(f"quota: 1 to {quota_max}", field="message.quota")
    prices = {Asset.BLACK.value: m["priceBlack"], Asset.USD.value: m["priceUsd"]}
    if m["active"] and not any(prices.values()):
        raise InvalidInput("priceBlack: an active plan has a price", field="message.priceBlack")
    hub = _hub(context)
    if (hub is None or m["plan"] not in hub.plans) and len(hub.plans if hub else ()) >= plans_max:
        raise InvalidTransition(f"the hub offers at most {plans_max} plans", entity="hub")

    def apply() -> list[Aggregate]:
        target = hub if hub is not None else Hub()
        target.set_plan(m["plan"], prices, m["periodSeconds"], m["quota"], m["active"])
        return [target]

    return Decision([], apply, {"plan": m["plan"], "active": m["active"]})


def _subscribe(context: Context, command: VerifiedCommand) -> Decision:
    m, signer, now = command.message, command.signer, context.now
    hub = _hub(context)
    plan = hub.plans.get(m["plan"]) if hub is not None else None
    if hub is None or plan is None:
        raise NotFound("hub plan", m["plan"])
    if not plan["active"]:
        raise InvalidTransition(f"plan {m['plan']} is withdrawn", entity="plan", state="inactive")
    price = plan["prices"][m["asset"]]
    if not price:
        raise InvalidInput(
            f"asset: plan {m['plan']} is not sold in {m['asset']}", field="message.asset"
        )
    if m["price"] != price:
        raise InvalidTransition(
            f"plan {m['plan']} costs {price} {m['asset']}, not {m['price']}",
            entity="plan",
            state="price",
        )
    asset = Asset(m["asset"])
    legs = [
        debit(signer, asset, AVAILABLE, price),
        credit(TREASURY_ACCOUNT, asset, HUB_POOL, price),
    ]
    existing = context.state.get(subscription_id(signer))
    ends_at = now + plan["period_seconds"]
    terms = (m["plan"], m["asset"], price, plan["quota"], now, ends_at)

    def apply() -> list[Aggregate]:
        # Paying again starts a new period at once, with a fresh quota.
        if isinstance(existing, Subscription):
            existing.renew(*terms)
            subscription = existing
        else:
            subscription = Subscription(signer, *terms)
        hub.fund(m["asset"], price, signer)
        return [subscription, hub]

    outcome = {"plan": m["plan"], "quota": plan["quota"], "starts_at": now, "ends_at": ends_at}
    return Decision(legs, apply, outcome)


def _hub_request(context: Context, command: VerifiedCommand) -> Decision:
    m, caller, now, state = command.message, command.signer, context.now, context.state
    try:
        listing = state.get(UUID(m["listing"]))
    except ValueError:
        listing = None
    if not isinstance(listing, Listing):
        raise NotFound("listing", m["listing"])
    if not (listing.listed and listing.hub):
        raise InvalidTransition(
            f"listing {listing.key} is not served by the hub", entity="listing", state="not-in-hub"
        )
    meter = state.get(meter_id(listing.key))
    subscription = state.get(subscription_id(caller))

    def counted(subscribed: bool, charged: int) -> Aggregate:
        target = meter if isinstance(meter, HubMeter) else HubMeter(listing.key)
        target.count(caller, subscribed, charged)
        return target

    if isinstance(subscription, Subscription) and subscription.active(now):
        if subscription.used >= subscription.quota:
            raise QuotaExhausted(
                caller, subscription.quota, subscription.used, subscription.ends_at, now
            )

        def apply_subscribed() -> list[Aggregate]:
            subscription.use(listing.key)
            return [subscription, counted(True, 0)]

        outcome = {
            "listing": listing.key,
            "metering": SUBSCRIPTION,
            "used": subscription.used + 1,
            "quota": subscription.quota,
            "resets_at": subscription.ends_at,
        }
        return Decision([], apply_subscribed, outcome)
    price = listing.request_price
    if not price:
        raise InvalidTransition(
            f"listing {listing.key} serves hub subscribers only, and {caller} has no "
            "active subscription",
            entity="subscription",
            state="none",
        )
    currency = Asset(listing.currency)
    fee = price * context.params.fees.platform_rate(currency) // BPS_DENOMINATOR
    legs = [debit(caller, currency, AVAILABLE, price)]
    if price - fee:
        legs.append(credit(listing.creator, currency, AVAILABLE, price - fee))
    if fee:
        legs.append(credit(TREASURY_ACCOUNT, currency, TREASURY, fee))

    def apply_paid() -> list[Aggregate]:
        return [counted(False, price)]

    outcome = {
        "listing": listing.key,
        "metering": PAY_PER_REQUEST,
        "charged": price,
        "currency": currency.value,
    }
    return Decision(legs, apply_paid, outcome)


def _close_hub_epoch(context: Context, command: VerifiedCommand) -> Decision:
    epoch, state = command.message["epoch"], context.state
    hub = _hub(context)
    last = hub.last_epoch if hub is not None else 0
    if epoch != last + 1:
        raise InvalidTransition(
            f"epoch {epoch}: the next hub epoch to close is {last + 1}", entity="hub epoch"
        )
    roster = state.get(HUB_ROSTER_ID)
    listings = roster.listings if isinstance(roster, HubRoster) else {}
    requests: dict[str, int] = {}
    creators: dict[str, int] = {}
    for listing, creator in listings.items():
        meter = state.get(meter_id(listing))
        served = meter.subscribed if isinstance(meter, HubMeter) else 0
        new = served - (hub.counted.get(listing, 0) if hub is not None else 0)
        if new < 0:
            raise LedgerCorrupted(f"hub meter of {listing} counts fewer requests than closed")
        if new:
            requests[listing] = new
            creators[creator] = creators.get(creator, 0) + new
    legs: list[Leg] = []
    payouts: dict[str, dict[str, int]] = {}
    fees: dict[str, int] = {}
    # Read, not `state.account`, which would make the account if it was never used.
    treasury = state.get(account_id(TREASURY_ACCOUNT))
    for asset in Asset:
        pool = hub.pool.get(asset.value, 0) if hub is not None else 0
        held = treasury.balance(asset, HUB_POOL) if isinstance(treasury, Account) else 0
        if held != pool:
            raise LedgerCorrupted(f"hub pool holds {held} {asset}, the hub says {pool}")
        if not pool or not creators:
            continue
        split = epoch_split(pool, asset, creators, context.params.fees)
        legs.append(debit(TREASURY_ACCOUNT, asset, HUB_POOL, pool))
        if split.platform:
            legs.append(credit(TREASURY_ACCOUNT, asset, TREASURY, split.platform))
        legs += [credit(c, asset, AVAILABLE, v) for c, v in sorted(split.creators.items()) if v]
        payouts[asset.value] = {c: v for c, v in sorted(split.creators.items()) if v}
        fees[asset.value] = split.platform

    def apply() -> list[Aggregate]:
        target = hub if hub is not None else Hub()
        target.close_epoch(epoch, requests, creators, payouts, fees, context.now)
        return [target]

    outcome = {"epoch": epoch, "requests": sum(requests.values()), "payouts": payouts, "fees": fees}
    return Decision(legs, apply, outcome)


HANDLERS: Mapping[str, Callable[[Context, VerifiedCommand], Decision]] = {
    "SetHubPlan": _set_hub_plan,
    "Subscribe": _subscribe,
    "HubRequest": _hub_request,
    "CloseHubEpoch": _close_hub_epoch,
}

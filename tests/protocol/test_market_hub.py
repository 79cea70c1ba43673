"""The GenAI Hub on the ledger: plans, subscriptions, requests metered against a quota or
paid one by one, and epochs that share the subscription pool among creators by requests,
exactly; every refusal changes nothing, and the audit checks the pool."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.application import Network
from protocol.assets import Asset
from protocol.audit import audit_lines
from protocol.errors import InsufficientFunds, InvalidInput, InvalidTransition, NotFound
from protocol.fees import FeeSchedule
from protocol.hub import (
    HUB_ID,
    HUB_POOL,
    Hub,
    HubMeter,
    QuotaExhausted,
    Subscription,
    epoch_split,
    input_digest,
    meter_id,
    subscription_id,
)
from protocol.keys import PrivateKey
from protocol.log import export_line, write_export
from protocol.market import hub_creators_max
from protocol.storage import Storage, memory_storage
from tests.protocol.compute_world import BLACK, World, key
from tests.protocol.test_market import artifact_of, list_model, refused

USD = 10**6
SUBSCRIBER, CALLER = key(0x5B1), key(0xCA11)
CREATORS = [key(0xC001), key(0xC002), key(0xC003)]
DIGEST = input_digest([[0.0, 1.0]])
PERIOD = 30 * 24 * 3600


@pytest.fixture
def world() -> Iterator[World]:
    app = Network(memory_storage())
    yield World(app)
    app.close()


@pytest.fixture
def stored_world(storage: Storage) -> Iterator[World]:
    app = Network(storage)
    yield World(app)
    app.close()


def plan(w: World, name: str = "basic", **changes: Any) -> None:
    fields = {
        "plan": name,
        "priceBlack": 3 * BLACK,
        "priceUsd": 20 * USD,
        "periodSeconds": PERIOD,
        "quota": 3,
        "active": True,
        **changes,
    }
    w.submit(w.operator, "SetHubPlan", **fields)


def subscribe(w: World, who: PrivateKey, asset: str = "BLACK", name: str = "basic") -> None:
    hub = w.app.get(HUB_ID)
    assert isinstance(hub, Hub)
    price = hub.plans[name]["prices"][asset]
    w.fund(who, price, asset)
    w.submit(who, "Subscribe", plan=name, asset=asset, price=price)


def hub_model(w: World, creator: PrivateKey, number: int, **changes: Any) -> str:
    fields = {"hub": True, "price": 0, "requestPrice": 10**15, **changes}
    return list_model(w, artifact_of(number), creator, **fields)


def request(w: World, who: PrivateKey, listing: str) -> dict[str, Any]:
    return w.submit(who, "HubRequest", listing=listing, inputDigest=DIGEST).outcome


# -- metering --------------------------------------------------------------------------------


def test_a_subscriber_is_metered_until_its_quota_then_refused(world: World) -> None:
    """Each request spends one of the period's requests; the one past the quota is
    QuotaExhausted with the facts a 429 carries, and records nothing."""
    plan(world)
    listing = hub_model(world, CREATORS[0], 1)
    subscribe(world, SUBSCRIBER)
    for used in (1, 2, 3):
        outcome = request(world, SUBSCRIBER, listing)
        assert (outcome["metering"], outcome["used"], outcome["quota"]) == ("subscription", used, 3)
    error = refused(
        world, QuotaExhausted, SUBSCRIBER, "HubRequest", listing=listing, inputDigest=DIGEST
    )
    assert (error.quota, error.used, error.resets_at) == (3, 3, world.now + PERIOD)
    assert error.retry_after_seconds == PERIOD
    meter = world.app.get(meter_id(listing))
    assert isinstance(meter, HubMeter) and (meter.subscribed, meter.paid) == (3, 0)


def test_a_caller_without_a_subscription_pays_per_request_exactly(world: World) -> None:
    """Without a subscription a request costs the listing's request price: the creator
    gets it less the platform fee, the treasury the fee."""
    listing = hub_model(world, CREATORS[0], 2, requestPrice=10**15 + 3, asset="BLACK")
    world.fund(CALLER, BLACK)
    result = world.submit(CALLER, "HubRequest", listing=listing, inputDigest=DIGEST)
    fee = (10**15 + 3) * 100 // 10_000
    assert result.outcome["metering"] == "pay-per-request"
    assert world.balance(CALLER) == BLACK - 10**15 - 3
    assert world.balance(CREATORS[0]) == 10**15 + 3 - fee
    assert world.balance("treasury", "treasury") == fee


def test_a_paid_request_without_funds_is_refused_and_nothing_changes(world: World) -> None:
    """A caller who cannot pay the request price gets InsufficientFunds."""
    listing = hub_model(world, CREATORS[0], 3)
    refused(world, InsufficientFunds, CALLER, "HubRequest", listing=listing, inputDigest=DIGEST)


def test_a_subscribers_only_model_refuses_callers_without_one(world: World) -> None:
    """A hub model without a request price serves subscribers only (409 otherwise)."""
    listing = hub_model(world, CREATORS[0], 4, requestPrice=0)
    world.fund(CALLER, BLACK)
    error = refused(
        world, InvalidTransition, CALLER, "HubRequest", listing=listing, inputDigest=DIGEST
    )
    assert error.entity == "subscription"


def test_an_expired_subscription_falls_back_to_pay_per_request(world: World) -> None:
    """After its period ends a subscriber pays per request, and subscribing again starts a
    new period with a fresh quota."""
    plan(world, quota=1)
    listing = hub_model(world, CREATORS[0], 5)
    subscribe(world, SUBSCRIBER)
    request(world, SUBSCRIBER, listing)
    world.now += PERIOD
    world.fund(SUBSCRIBER, BLACK)
    assert request(world, SUBSCRIBER, listing)["metering"] == "pay-per-request"
    subscribe(world, SUBSCRIBER)
    assert request(world, SUBSCRIBER, listing)["used"] == 1
    subscription = world.app.get(subscription_id(SUBSCRIBER.address))
    assert isinstance(subscription, Subscription)
    assert (subscription.periods, subscription.requests_total) == (2, 2)


def test_requests_to_a_model_the_hub_does_not_serve_are_refused(world: World) -> None:
    """A listing off the hub, a delisted one and an unknown one are refused."""
    plan(world)
    subscribe(world, SUBSCRIBER)
    off = list_model(world, artifact_of(6), CREATORS[0])
    delisted = hub_model(world, CREATORS[0], 7)
    world.submit(CREATORS[0], "Delist", listing=delisted)
    for listing in (off, delisted):
        refused(
            world, InvalidTransition, SUBSCRIBER, "HubRequest", listing=listing, inputDigest=DIGEST
        )
    refused(
        world,
        NotFound,
        SUBSCRIBER,
        "HubRequest",
        listing="00000000-0000-0000-0000-000000000000",
        inputDigest=DIGEST,
    )


def test_subscribing_checks_the_plan_its_price_and_asset(world: World) -> None:
    """An unknown plan (404), a withdrawn one, a stale price (409) and an asset the plan is
    not sold in (400) are refused; nothing is paid."""
    plan(world, priceUsd=0)
    plan(world, "old", active=False)
    world.fund(SUBSCRIBER, 10 * BLACK)
    world.fund(SUBSCRIBER, 100 * USD, "USD")
    refused(world, NotFound, SUBSCRIBER, "Subscribe", plan="gold", asset="BLACK", price=BLACK)
    refused(
        world,
        InvalidTransition,
        SUBSCRIBER,
        "Subscribe",
        plan="old",
        asset="BLACK",
        price=3 * BLACK,
    )
    refused(
        world, InvalidTransition, SUBSCRIBER, "Subscribe", plan="basic", asset="BLACK", price=BLACK
    )
    refused(world, InvalidInput, SUBSCRIBER, "Subscribe", plan="basic", asset="USD", price=20 * USD)


def test_plans_are_checked(world: World) -> None:
    """A period out of range, a zero quota or an active plan without a price is refused."""
    base = {
        "plan": "p",
        "priceBlack": 1,
        "priceUsd": 0,
        "periodSeconds": 3600,
        "quota": 1,
        "active": True,
    }
    for changes in ({"periodSeconds": 59}, {"quota": 0}, {"priceBlack": 0}):
        refused(world, InvalidInput, world.operator, "SetHubPlan", **{**base, **changes})


# -- epochs ----------------------------------------------------------------------------------


def test_an_epoch_shares_the_pool_by_requests_exactly(stored_world: World) -> None:
    """Subscriptions paid in BLACK and in USD are shared, per currency, among the creators
    by the subscribed requests their models served (3:1), the platform fee first; the pool
    is emptied and every unit is accounted for."""
    w = stored_world
    plan(w, quota=10)
    first = hub_model(w, CREATORS[0], 10)
    second = hub_model(w, CREATORS[1], 11)
    unused = hub_model(w, CREATORS[2], 12)
    payer_usd = key(0x5B2)
    subscribe(w, SUBSCRIBER, "BLACK")
    subscribe(w, payer_usd, "USD")
    for who, listing in [(SUBSCRIBER, first)] * 2 + [(payer_usd, first), (payer_usd, second)]:
        request(w, who, listing)
    result = w.submit(w.operator, "CloseHubEpoch", epoch=1)
    weights = {CREATORS[0].address: 3, CREATORS[1].address: 1}
    for asset, pool in (("BLACK", 3 * BLACK), ("USD", 20 * USD)):
        split = epoch_split(pool, Asset(asset), weights, FeeSchedule())
        assert split.total == pool
        for creator in CREATORS[:2]:
            assert w.balance(creator, asset=asset) == split.creators[creator.address]
        assert w.balance("treasury", "treasury", asset) == split.platform
        assert w.balance("treasury", HUB_POOL, asset) == 0
    assert w.balance(CREATORS[2], asset="BLACK") == 0
    assert result.outcome["requests"] == 4
    hub = w.app.get(HUB_ID)
    assert isinstance(hub, Hub)
    assert hub.epochs[0]["requests"] == {first: 3, second: 1}
    assert unused not in hub.epochs[0]["requests"]


def test_an_epoch_counts_only_the_requests_since_the_last_one(world: World) -> None:
    """Requests counted by epoch 1 are not counted again by epoch 2; an epoch with no
    requests carries the pool to the next."""
    plan(world, quota=10)
    listing = hub_model(world, CREATORS[0], 13)
    subscribe(world, SUBSCRIBER)
    request(world, SUBSCRIBER, listing)
    world.submit(world.operator, "CloseHubEpoch", epoch=1)
    paid_first = world.balance(CREATORS[0])
    subscribe(world, SUBSCRIBER)
    second = world.submit(world.operator, "CloseHubEpoch", epoch=2)
    assert second.legs == [] and second.outcome["requests"] == 0
    assert world.balance("treasury", HUB_POOL) == 3 * BLACK
    request(world, SUBSCRIBER, listing)
    world.submit(world.operator, "CloseHubEpoch", epoch=3)
    assert world.balance(CREATORS[0]) - paid_first == 3 * BLACK - 3 * BLACK // 100
    hub = world.app.get(HUB_ID)
    assert isinstance(hub, Hub)
    assert [e["requests"] for e in hub.epochs] == [{listing: 1}, {}, {listing: 1}]
    assert hub.epochs[1]["carried"] == {"BLACK": 3 * BLACK}


def test_epochs_close_in_order(world: World) -> None:
    """Epoch 1 first; a repeat or a gap is refused."""
    world.submit(world.operator, "CloseHubEpoch", epoch=1)
    for epoch in (1, 3):
        refused(world, InvalidTransition, world.operator, "CloseHubEpoch", epoch=epoch)


def test_the_hub_admits_a_bounded_number_of_creators(world: World) -> None:
    """An epoch pays every creator in one posting set, so the hub takes at most
    hub_creators_max creators; the next one's hub listing is refused (409)."""
    for number in range(hub_creators_max):
        hub_model(world, key(0xD000 + number), 100 + number, requestPrice=0)
    late = key(0xDFFF)
    refused(
        world,
        InvalidTransition,
        late,
        "ListModel",
        artifact=artifact_of(999),
        name="late",
        task="other",
        license="MIT",
        licenseText="",
        description="",
        price=0,
        asset="BLACK",
        royaltyBps=0,
        provenanceJob="",
        hub=True,
        requestPrice=0,
    )
    hub_model(world, key(0xD000), 998, requestPrice=0)


@settings(max_examples=15, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=3),
    black=st.integers(min_value=1, max_value=10**22),
    usd=st.integers(min_value=0, max_value=10**9),
)
def test_epoch_revenue_sharing_on_the_ledger_adds_up_exactly(
    counts: list[int], black: int, usd: int
) -> None:
    """Whatever the requests per creator and the subscription prices, the epoch's postings
    pay out the whole pool: creators' credits plus the fee equal it, per currency, and the
    log audits clean."""
    app = Network(memory_storage())
    w = World(app)
    plan(w, priceBlack=black, priceUsd=usd, quota=10)
    payers = [key(0xE000 + i) for i in range(2)]
    subscribe(w, payers[0], "BLACK")
    if usd:
        subscribe(w, payers[1], "USD")
    listings = [hub_model(w, CREATORS[i], 200 + i) for i in range(len(counts))]
    for listing, count in zip(listings, counts, strict=True):
        for n in range(count):
            request(w, payers[n % 2] if usd else payers[0], listing)
    result = w.submit(w.operator, "CloseHubEpoch", epoch=1)
    for asset, pool in (("BLACK", black), ("USD", usd)):
        credits = sum(leg[4] for leg in result.legs if leg[1] == asset and leg[3] == "C")
        debits = sum(leg[4] for leg in result.legs if leg[1] == asset and leg[3] == "D")
        if sum(counts):
            assert credits == debits == pool
            assert w.balance("treasury", HUB_POOL, asset) == 0
        else:
            assert credits == debits == 0
            assert w.balance("treasury", HUB_POOL, asset) == pool
    buffer = io.BytesIO()
    write_export(app, w.operator, buffer)
    assert audit_lines(buffer.getvalue().splitlines(), workers=0).ok
    app.close()


@given(
    pool=st.integers(min_value=0, max_value=2**200),
    requests=st.dictionaries(
        st.sampled_from([f"0x{i:040x}" for i in range(30)]),
        st.integers(min_value=1, max_value=2**32),
        min_size=1,
    ),
    currency=st.sampled_from(list(Asset)),
)
def test_epoch_split_adds_up_exactly(pool: int, requests: dict[str, int], currency: Asset) -> None:
    """The fee and the creators' shares add up to the pool; the fee is its rate rounded
    down; a creator with more requests never gets less."""
    split = epoch_split(pool, currency, requests, FeeSchedule())
    assert split.total == pool
    assert split.platform == pool * FeeSchedule().platform_rate(currency) // 10_000
    ranked = sorted(requests, key=lambda c: requests[c])
    for low, high in itertools.pairwise(ranked):
        if requests[low] < requests[high]:
            assert split.creators[low] <= split.creators[high]


# -- inputs and the audit ---------------------------------------------------------------------


def test_the_input_digest_is_pinned() -> None:
    """The digest of a request's inputs: row count and width (uint32 big-endian), then
    float32 little-endian values; ragged or empty rows are refused."""
    encoded = bytes.fromhex("00000002000000020000803f000020c00000000000004040")
    assert input_digest([[1.0, -2.5], [0.0, 3.0]]) == "0x" + hashlib.sha256(encoded).hexdigest()
    assert input_digest([[1.0, -2.5], [0.0, 3.0]]) == (
        "0x8ee2029c2424363070ad664cddaf796da1fdf4e60a81f10c60ab9c1226879a5b"
    )
    for bad in ([], [[]], [[1.0], [1.0, 2.0]], [[1e39]]):
        with pytest.raises(InvalidInput):
            input_digest(bad)


def test_the_audit_checks_the_hub_pool_against_the_hub(world: World) -> None:
    """A clean hub log audits; a forged PoolFunded amount, which no longer matches the
    pool bucket, fails the audit."""
    plan(world)
    listing = hub_model(world, CREATORS[0], 20)
    subscribe(world, SUBSCRIBER)
    request(world, SUBSCRIBER, listing)
    world.submit(world.operator, "CloseHubEpoch", epoch=1)
    buffer = io.BytesIO()
    write_export(world.app, world.operator, buffer)
    lines = buffer.getvalue().splitlines()
    assert audit_lines(lines, workers=0).ok
    forged = []
    for line in lines[:-1]:
        leaf = json.loads(line)["event"]
        if leaf["type"] == "Hub.PoolFunded":
            leaf["data"]["amount"] += 1
        forged.append(export_line(leaf)[0])
    report = audit_lines(forged, workers=0, require_tree_head=False)
    assert not report.ok and report.error is not None
    assert "hub pool" in report.error.reason

"""DMarket on the ledger: listings with provenance, sales split exactly into the creator's
share, the trainers' royalties and the platform fee, grants, updates, delisting, reviews
and download tokens; every refusal changes nothing, and the log audits clean."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.application import CommandResult, Network, Unauthorized
from protocol.assets import Asset
from protocol.audit import audit_lines
from protocol.compute import UnauthorizedActor
from protocol.errors import (
    CommandExpired,
    InsufficientFunds,
    InvalidInput,
    InvalidTransition,
    NotFound,
    WrongSigner,
)
from protocol.fees import FeeSchedule
from protocol.keys import PrivateKey
from protocol.log import write_export
from protocol.market import (
    Grant,
    InvalidToken,
    Listing,
    Review,
    TokenExpired,
    check_download_request,
    check_download_token,
    download_token_seconds,
    grant_id,
    issue_download_token,
    listing_key,
    purchase_split,
    review_id,
    royalty_bps_max,
    sign_download_request,
    split_by_weight,
)
from protocol.storage import Storage, memory_storage
from tests.protocol.compute_world import BLACK, CHAIN_ID, World, key, small_spec

BUYER, OTHER = key(0xB1), key(0xB2)


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


def trained_job(w: World, trainers: tuple[PrivateKey, ...] | None = None) -> str:
    """A completed job of the world's developer, segment i trained by trainers[i]."""
    trainers = trainers or (w.providers[0], w.providers[1])
    for trainer in dict.fromkeys(trainers):
        if w.get_provider(trainer) is None:
            w.register_provider(trainer)
    if w.get_verifier(w.verifiers[0]) is None:
        for verifier in w.verifiers[:2]:
            w.register_verifier(verifier)
    job = w.submit_job(small_spec(total_steps=2 * len(trainers), segment_steps=2))
    for trainer in trainers:
        w.run_segment(trainer, job)
    assert w.get_job(job).status == "completed"
    return job


def listing_fields(artifact: str, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "artifact": artifact,
        "name": "digits-mlp",
        "task": "classification",
        "license": "MIT",
        "licenseText": "",
        "description": "an MLP trained on the network",
        "price": 10 * BLACK,
        "asset": "BLACK",
        "royaltyBps": 0,
        "provenanceJob": "",
        "hub": False,
        "requestPrice": 0,
    }
    fields.update(changes)
    return fields


def list_model(w: World, artifact: str, who: PrivateKey | None = None, **changes: Any) -> str:
    result = w.submit(who or w.developer, "ListModel", **listing_fields(artifact, **changes))
    return str(result.outcome["listing"])


def artifact_of(number: int) -> str:
    return "0x" + f"{number:064x}"


def get_listing(w: World, listing: str) -> Listing:
    found = w.app.get(UUID(listing))
    assert isinstance(found, Listing)
    return found


def buy(w: World, who: PrivateKey, listing: str, **changes: Any) -> CommandResult:
    found = get_listing(w, listing)
    fields = {"listing": listing, "price": found.price, "asset": found.currency, **changes}
    return w.submit(who, "BuyModel", **fields)


def refused(w: World, error: type[Exception], who: PrivateKey, kind: str, **fields: Any) -> Any:
    """Submit a command that must be refused with `error`; the log and every balance stay."""
    size = w.log_size()
    balances = {k.address: w.app.balances(k.address) for k in (who, w.developer, BUYER)}
    with pytest.raises(error) as caught:
        w.submit(who, kind, **fields)
    assert w.log_size() == size
    assert {k.address: w.app.balances(k.address) for k in (who, w.developer, BUYER)} == balances
    return caught.value


# -- listing and provenance -----------------------------------------------------------------


def test_a_model_listed_with_provenance_shows_its_verification_record(
    stored_world: World,
) -> None:
    """A completed job's final checkpoint listed by its developer carries the job's record:
    segments, verified and re-executed steps, verdicts and the segments each provider
    trained."""
    w = stored_world
    p0, p1 = w.providers[0], w.providers[1]
    job = trained_job(w, (p0, p0, p1))
    artifact = w.get_job(job).checkpoint
    listing = list_model(w, artifact, provenanceJob=job, royaltyBps=1000)
    assert listing == listing_key(artifact)
    record = get_listing(w, listing).provenance
    assert record is not None
    assert record["job"] == job and record["final_checkpoint"] == artifact
    assert (record["segments"], record["verified_steps"]) == (3, 6)
    assert record["reexecuted_steps"] == sum(
        w.get_commitment(a["commitment"]).samples for a in w.get_job(job).accepted
    )
    assert record["verdicts"] == {"accepted": 3, "cleared_on_dispute": 0}
    assert record["providers"] == {p0.address: 2, p1.address: 1}


def test_a_sale_pays_creator_royalties_by_segments_and_the_platform_fee_exactly(
    stored_world: World,
) -> None:
    """One purchase is one balanced posting set: the buyer pays the price; the trainers
    share the royalty 2:1 by segments; the treasury takes the BLACK fee; the creator the
    rest; a license grant is recorded."""
    w = stored_world
    p0, p1 = w.providers[0], w.providers[1]
    job = trained_job(w, (p0, p0, p1))
    price = 10 * BLACK + 7  # dust, to exercise the rounding rules
    listing = list_model(
        w, w.get_job(job).checkpoint, provenanceJob=job, royaltyBps=1500, price=price
    )
    w.fund(BUYER, 20 * BLACK)
    before = {k.address: w.balance(k) for k in (w.developer, p0, p1)}
    treasury = w.balance("treasury", "treasury")
    result = buy(w, BUYER, listing)
    split = purchase_split(price, Asset.BLACK, 1500, {p0.address: 2, p1.address: 1}, FeeSchedule())
    assert split.total == price
    assert split.platform == price * 100 // 10_000
    assert split.royalties[p0.address] + split.royalties[p1.address] == price * 1500 // 10_000
    assert w.balance(BUYER) == 20 * BLACK - price
    assert w.balance(w.developer) - before[w.developer.address] == split.creator
    assert w.balance(p0) - before[p0.address] == split.royalties[p0.address]
    assert w.balance(p1) - before[p1.address] == split.royalties[p1.address]
    assert w.balance("treasury", "treasury") - treasury == split.platform
    assert sum(leg[4] for leg in result.legs if leg[3] == "C") == price
    grant = w.app.get(grant_id(listing, BUYER.address))
    assert isinstance(grant, Grant) and (grant.price, grant.license) == (price, "MIT")
    assert (get_listing(w, listing).sales, get_listing(w, listing).revenue) == (1, price)


def test_the_platform_fee_on_a_sale_is_lower_in_black_than_in_usd(world: World) -> None:
    """The same price pays the treasury 1% in BLACK and 2.5% in USD."""
    black = list_model(world, artifact_of(1), price=1_000_000)
    usd = list_model(world, artifact_of(2), price=1_000_000, asset="USD")
    world.fund(BUYER, 1_000_000)
    world.fund(BUYER, 1_000_000, "USD")
    buy(world, BUYER, black)
    buy(world, BUYER, usd)
    assert world.balance("treasury", "treasury") == 10_000
    assert world.balance("treasury", "treasury", "USD") == 25_000


def test_provenance_of_someone_elses_job_is_refused_and_nothing_changes(world: World) -> None:
    """Only the job's developer may name it as a model's provenance (403)."""
    job = trained_job(world)
    error = refused(
        world,
        UnauthorizedActor,
        OTHER,
        "ListModel",
        **listing_fields(world.get_job(job).checkpoint, provenanceJob=job),
    )
    assert error.role == f"developer of job {job}"


@pytest.mark.parametrize(
    "case, error",
    [
        ("unfinished", InvalidTransition),
        ("another checkpoint", InvalidInput),
        ("unknown job", NotFound),
    ],
)
def test_a_provenance_that_is_not_the_completed_jobs_final_checkpoint_is_refused(
    world: World, case: str, error: type[Exception]
) -> None:
    """A running job, an artifact other than the job's final checkpoint, and a job that
    does not exist are each refused, and nothing changes."""
    world.setup(providers=1, verifiers=2)
    job = world.submit_job(small_spec(total_steps=4, segment_steps=2))
    world.run_segment(world.providers[0], job)
    artifact = world.get_job(job).checkpoint
    if case == "another checkpoint":
        world.run_segment(world.providers[0], job)
        artifact = artifact_of(99)
    elif case == "unknown job":
        job = "00000000-0000-0000-0000-000000000000"
    refused(
        world,
        error,
        world.developer,
        "ListModel",
        **listing_fields(artifact, provenanceJob=job),
    )


def test_an_artifact_is_listed_once(world: World) -> None:
    """A second listing of the same artifact, by anyone, is refused (409)."""
    list_model(world, artifact_of(5))
    refused(world, InvalidTransition, OTHER, "ListModel", **listing_fields(artifact_of(5)))
    refused(
        world, InvalidTransition, world.developer, "ListModel", **listing_fields(artifact_of(5))
    )


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"name": " "}, "message.name"),
        ({"name": "x" * 65}, "message.name"),
        ({"task": "poetry"}, "message.task"),
        ({"license": "WTFPL"}, "message.license"),
        ({"license": "custom"}, "message.licenseText"),
        ({"royaltyBps": 100}, "message.royaltyBps"),
        ({"royaltyBps": royalty_bps_max + 1}, "message.royaltyBps"),
        ({"requestPrice": 5}, "message.requestPrice"),
    ],
)
def test_listing_terms_are_checked(world: World, changes: dict[str, Any], field: str) -> None:
    """An empty or long name, an unknown task or license, a custom license without terms,
    a royalty without provenance or above the cap, and a per-request price off the hub are
    refused with the offending field named."""
    error = refused(
        world,
        InvalidInput,
        world.developer,
        "ListModel",
        **listing_fields(artifact_of(6), **changes),
    )
    assert error.field == field


# -- buying ---------------------------------------------------------------------------------


def test_buying_without_funds_is_refused_and_nothing_changes(world: World) -> None:
    """A buyer who cannot pay gets InsufficientFunds; no grant, no posting."""
    listing = list_model(world, artifact_of(7))
    world.fund(BUYER, BLACK)
    refused(
        world,
        InsufficientFunds,
        BUYER,
        "BuyModel",
        listing=listing,
        price=10 * BLACK,
        asset="BLACK",
    )
    assert world.app.get(grant_id(listing, BUYER.address)) is None


def test_a_buyer_signs_the_price_and_a_changed_price_is_refused(world: World) -> None:
    """After the creator changes the price, a purchase signed at the old price is refused
    (409); signed at the new one, it pays the new price."""
    listing = list_model(world, artifact_of(8))
    world.submit(
        world.developer,
        "UpdateListing",
        listing=listing,
        price=12 * BLACK,
        description="now dearer",
        hub=False,
        requestPrice=0,
    )
    world.fund(BUYER, 20 * BLACK)
    refused(
        world,
        InvalidTransition,
        BUYER,
        "BuyModel",
        listing=listing,
        price=10 * BLACK,
        asset="BLACK",
    )
    refused(
        world, InvalidTransition, BUYER, "BuyModel", listing=listing, price=12 * BLACK, asset="USD"
    )
    buy(world, BUYER, listing)
    assert world.balance(BUYER) == 8 * BLACK
    assert get_listing(world, listing).description == "now dearer"


def test_a_second_purchase_or_the_creators_own_is_refused(world: World) -> None:
    """A buyer holding a grant cannot pay twice, and a creator cannot buy its own model."""
    listing = list_model(world, artifact_of(9))
    world.fund(BUYER, 30 * BLACK)
    world.fund(world.developer, 30 * BLACK)
    buy(world, BUYER, listing)
    refused(
        world,
        InvalidTransition,
        BUYER,
        "BuyModel",
        listing=listing,
        price=10 * BLACK,
        asset="BLACK",
    )
    refused(
        world,
        InvalidTransition,
        world.developer,
        "BuyModel",
        listing=listing,
        price=10 * BLACK,
        asset="BLACK",
    )


def test_a_free_model_is_granted_without_a_posting(world: World) -> None:
    """Buying a free model records a grant (so its buyer may review it) and moves nothing."""
    listing = list_model(world, artifact_of(10), price=0)
    result = buy(world, BUYER, listing)
    assert result.legs == []
    assert isinstance(world.app.get(grant_id(listing, BUYER.address)), Grant)


def test_only_the_creator_updates_or_delists_a_listing(world: World) -> None:
    """Another signer's UpdateListing or Delist is refused (403) and changes nothing."""
    listing = list_model(world, artifact_of(11))
    update = {"listing": listing, "price": 1, "description": "", "hub": False, "requestPrice": 0}
    refused(world, UnauthorizedActor, OTHER, "UpdateListing", **update)
    refused(world, UnauthorizedActor, OTHER, "Delist", listing=listing)


def test_a_delisted_model_is_not_sold_but_its_grants_remain(world: World) -> None:
    """After Delist, purchases and updates are refused; the earlier buyer's grant stays."""
    listing = list_model(world, artifact_of(12))
    world.fund(BUYER, 10 * BLACK)
    world.fund(OTHER, 10 * BLACK)
    buy(world, BUYER, listing)
    world.submit(world.developer, "Delist", listing=listing)
    assert get_listing(world, listing).status == "delisted"
    refused(
        world,
        InvalidTransition,
        OTHER,
        "BuyModel",
        listing=listing,
        price=10 * BLACK,
        asset="BLACK",
    )
    refused(world, InvalidTransition, world.developer, "Delist", listing=listing)
    assert isinstance(world.app.get(grant_id(listing, BUYER.address)), Grant)


# -- reviews --------------------------------------------------------------------------------


def test_reviews_come_from_buyers_only_and_a_revision_replaces_the_rating(world: World) -> None:
    """A non-buyer's review is refused (403), a rating outside 1-5 too (400); a buyer's
    second review replaces its first in the listing's average."""
    listing = list_model(world, artifact_of(13))
    world.fund(BUYER, 10 * BLACK)
    world.fund(OTHER, 10 * BLACK)
    refused(world, UnauthorizedActor, OTHER, "ReviewModel", listing=listing, rating=5, text="")
    buy(world, BUYER, listing)
    buy(world, OTHER, listing)
    refused(world, InvalidInput, BUYER, "ReviewModel", listing=listing, rating=6, text="")
    world.submit(BUYER, "ReviewModel", listing=listing, rating=2, text="meh")
    world.submit(OTHER, "ReviewModel", listing=listing, rating=5, text="great")
    assert get_listing(world, listing).to_json()["rating"] == "3.50"
    world.submit(BUYER, "ReviewModel", listing=listing, rating=4, text="better after all")
    found = get_listing(world, listing)
    assert (found.rating_count, found.to_json()["rating"]) == (2, "4.50")
    review = world.app.get(review_id(listing, BUYER.address))
    assert isinstance(review, Review) and (review.rating, review.text) == (4, "better after all")


# -- splits (properties) ----------------------------------------------------------------------

_weights = st.dictionaries(
    st.sampled_from([f"0x{i:040x}" for i in range(12)]),
    st.integers(min_value=0, max_value=10_000),
    min_size=1,
).filter(lambda w: sum(w.values()) > 0)


@given(amount=st.integers(min_value=0, max_value=2**256 - 1), weights=_weights)
def test_split_by_weight_adds_up_exactly_and_stays_within_one_unit(
    amount: int, weights: dict[str, int]
) -> None:
    """Shares add up to the amount, and each is its exact proportion rounded down or up."""
    shares = split_by_weight(amount, weights)
    total = sum(weights.values())
    assert sum(shares.values()) == amount
    for name, weight in weights.items():
        exact_floor = amount * weight // total
        assert exact_floor <= shares[name] <= exact_floor + (1 if weight else 0)


@given(
    price=st.integers(min_value=0, max_value=2**200),
    royalty_bps=st.integers(min_value=0, max_value=royalty_bps_max),
    weights=_weights,
    currency=st.sampled_from(list(Asset)),
)
def test_a_sale_split_adds_up_to_the_price(
    price: int, royalty_bps: int, weights: dict[str, int], currency: Asset
) -> None:
    """Creator share, royalties and platform fee add up to the price, none negative, and
    the fee and royalty are their rates rounded down."""
    split = purchase_split(price, currency, royalty_bps, weights, FeeSchedule())
    assert split.total == price
    assert split.creator >= 0 and all(v >= 0 for v in split.royalties.values())
    assert split.platform == price * FeeSchedule().platform_rate(currency) // 10_000
    assert sum(split.royalties.values()) == price * royalty_bps // 10_000


# -- download tokens ---------------------------------------------------------------------------

OPERATOR = key(0xB1AC7)
LISTING = listing_key(artifact_of(1))
ARTIFACT = artifact_of(1)
NOW = 1_800_000_000


def test_a_download_token_verifies_only_as_issued() -> None:
    """The token the operator issues names its buyer; changing its buyer, expiry or
    signature, presenting it for another listing or artifact, or a token signed by another
    key are each refused as invalid; past its expiry it is refused as expired."""
    token = issue_download_token(OPERATOR, CHAIN_ID, LISTING, BUYER.address, ARTIFACT, NOW)
    assert token.expiry == NOW + download_token_seconds
    text = token.encode()
    check = lambda t, listing=LISTING, artifact=ARTIFACT: check_download_token(  # noqa: E731
        t, CHAIN_ID, OPERATOR.address, listing, artifact, NOW
    )
    assert check(text) == BUYER.address
    buyer, expiry, signature = text.split(".")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    tampered = [
        f"{OTHER.address}.{expiry}.{signature}",
        f"{buyer}.{int(expiry) + 1}.{signature}",
        f"{buyer}.{expiry}.{flipped}",
        f"{buyer}.{expiry}",
        "",
        issue_download_token(OTHER, CHAIN_ID, LISTING, BUYER.address, ARTIFACT, NOW).encode(),
    ]
    for bad in tampered:
        with pytest.raises(InvalidToken) as caught:
            check(bad)
        assert not isinstance(caught.value, TokenExpired), bad
    with pytest.raises(InvalidToken):
        check(text, listing=listing_key(artifact_of(2)))
    with pytest.raises(InvalidToken):
        check(text, artifact=artifact_of(2))
    with pytest.raises(TokenExpired):
        check_download_token(text, CHAIN_ID, OPERATOR.address, LISTING, ARTIFACT, token.expiry + 1)


def test_a_download_request_is_the_buyers_and_short_lived() -> None:
    """A buyer's request verifies for its listing and expiry; another signer, a past
    expiry, or one too far ahead is refused."""
    signature = sign_download_request(BUYER, CHAIN_ID, LISTING, NOW + 60)
    check_download_request(CHAIN_ID, LISTING, BUYER.address, NOW + 60, signature, NOW)
    with pytest.raises(WrongSigner):
        check_download_request(CHAIN_ID, LISTING, OTHER.address, NOW + 60, signature, NOW)
    with pytest.raises(WrongSigner):
        check_download_request(CHAIN_ID, LISTING, BUYER.address, NOW + 59, signature, NOW)
    with pytest.raises(CommandExpired):
        check_download_request(CHAIN_ID, LISTING, BUYER.address, NOW + 60, signature, NOW + 61)
    far = sign_download_request(BUYER, CHAIN_ID, LISTING, NOW + 3600)
    with pytest.raises(InvalidInput):
        check_download_request(CHAIN_ID, LISTING, BUYER.address, NOW + 3600, far, NOW)


# -- the audit ----------------------------------------------------------------------------------


def export(w: World) -> list[bytes]:
    buffer = io.BytesIO()
    write_export(w.app, w.operator, buffer)
    return buffer.getvalue().splitlines()


def test_the_audit_of_a_market_log_passes(world: World) -> None:
    """A log with listings, sales with royalties, updates, reviews and a delisting replays
    clean: signatures, postings and every market event."""
    job = trained_job(world)
    listing = list_model(world, world.get_job(job).checkpoint, provenanceJob=job, royaltyBps=500)
    world.fund(BUYER, 20 * BLACK)
    buy(world, BUYER, listing)
    world.submit(BUYER, "ReviewModel", listing=listing, rating=5, text="")
    world.submit(world.developer, "Delist", listing=listing)
    report = audit_lines(export(world), workers=0)
    assert report.ok, report.error
    assert report.events == world.log_size()


def test_the_audit_refuses_a_forged_sale_posting(world: World) -> None:
    """A sale whose recorded royalty is moved to another account no longer matches its
    account postings: the audit fails at that command."""
    job = trained_job(world)
    listing = list_model(world, world.get_job(job).checkpoint, provenanceJob=job, royaltyBps=500)
    world.fund(BUYER, 20 * BLACK)
    buy(world, BUYER, listing)
    lines = export(world)
    from protocol.log import export_line

    forged: list[bytes] = []
    for line in lines[:-1]:
        leaf = json.loads(line)["event"]
        if leaf["type"] == "Receipt.Accepted" and leaf["data"]["kind"] == "BuyModel":
            leaf["data"]["legs"][1][0] = OTHER.address
        forged.append(export_line(leaf)[0])
    report = audit_lines(forged, workers=0, require_tree_head=False)
    assert not report.ok


def test_operator_kinds_of_the_market_are_operator_only(world: World) -> None:
    """A plan or an epoch close signed by anyone but the operator is refused."""
    refused(
        world,
        Unauthorized,
        OTHER,
        "SetHubPlan",
        plan="p",
        priceBlack=1,
        priceUsd=0,
        periodSeconds=3600,
        quota=1,
        active=True,
    )
    refused(world, Unauthorized, OTHER, "CloseHubEpoch", epoch=1)

"""DMarket: models trained on the network, listed, bought and licensed on the same ledger
(specs/market.md).

A listing sells one artifact, a safetensors blob named by its SHA-256; the listing's id
derives from that digest, so an artifact is listed at most once. A listing may name its
provenance, the job that trained it: only a completed job whose every segment was
verified, owned by the lister, whose final checkpoint is the artifact. The listing then
carries the job's verification record, and may pay a royalty on each sale to the
providers who trained it, split by the segments each had accepted.

A purchase is one balanced posting set (the buyer's payment split into the platform fee,
the royalties and the creator's rest) and a license grant. A grant lets its holder fetch
the artifact with a download token: EIP-712 typed data the operator signs over the
listing, the buyer, the artifact and an expiry, handed to a buyer who asks with a request
of its own signed the same way. Free listings need neither.

The hub's roster (every listing ever offered to hub subscribers) lives here because the
market decides it; the hub's own state is in `protocol.hub`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from protocol import eip712
from protocol.assets import Asset
from protocol.commands import DOMAIN_NAME, DOMAIN_VERSION, VerifiedCommand
from protocol.compute import Context, Decision, UnauthorizedActor
from protocol.errors import (
    CommandExpired,
    InvalidInput,
    InvalidTransition,
    NotFound,
    ProtocolError,
    WrongSigner,
)
from protocol.fees import BPS_DENOMINATOR, FeeSchedule
from protocol.jobs import COMPLETED, Commitment, Job
from protocol.keys import PrivateKey, parse_address, recover_address
from protocol.ledger import AVAILABLE, TREASURY, TREASURY_ACCOUNT, Leg, credit, debit, namespaced_id

# What a listing may say it is. `custom` licenses carry their terms in `licenseText`; the
# others may add terms there.
LICENSES = ("MIT", "Apache-2.0", "CC-BY-4.0", "CC-BY-NC-4.0", "OpenRAIL-M", "proprietary", "custom")
CUSTOM_LICENSE = "custom"
TASKS = ("classification", "regression", "embedding", "generation", "other")
LISTED = "listed"
DELISTED = "delisted"

name_chars_max = 64
# A royalty above half the price would leave the creator less than the trainers; the
# platform fee (at most 10,000 bps minus this) comes on top.
royalty_bps_max = 5000
# Reading a provenance job's verification record costs one read per segment.
provenance_segments_max = 4096
# A sale's posting set holds one leg per royalty payee, within the ledger's 64 legs.
royalty_providers_max = 32
rating_min = 1
rating_max = 5
# The hub pays every creator with requests in one posting set per epoch: at most two legs
# per creator (BLACK and USD) beside four for the pool and the fees, within 64 legs.
hub_creators_max = 30
# An epoch's close reads the meter of every listing ever offered in the hub.
hub_listings_max = 256

# Download tokens (specs/market.md, "Downloads").
download_token_seconds = 600
download_request_seconds_max = 300
_TOKEN = re.compile(r"(0x[0-9a-fA-F]{40})\.([0-9]{1,20})\.(0x[0-9a-fA-F]{130})")
_EIP712_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]

HUB_ROSTER_ID = namespaced_id("hub-roster")


def listing_key(artifact: str) -> str:
    """The id of the listing of `artifact` (0x + 64 hex digits, any case)."""
    return str(namespaced_id("listing", artifact.lower()))


def grant_id(listing: str, buyer: str) -> UUID:
    return namespaced_id("grant", listing, buyer)


def review_id(listing: str, buyer: str) -> UUID:
    return namespaced_id("review", listing, buyer)


# -- errors ---------------------------------------------------------------------------------


class GrantRequired(ProtocolError, PermissionError):
    """The account holds no license grant for a paid listing (nor created it)."""

    def __init__(self, listing: str, account: str | None, detail: str = "") -> None:
        who = account or "the caller"
        super().__init__(detail or f"{who} holds no license grant for listing {listing}")
        self.listing = listing
        self.account = account


class InvalidToken(ProtocolError, PermissionError):
    """A download token that is malformed, altered, or not the operator's for this listing."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"invalid download token: {reason}")
        self.reason = reason


class TokenExpired(InvalidToken):
    """A download token past its expiry."""

    def __init__(self, expiry: int, now: int) -> None:
        super().__init__("expired", f"the download token expired at {expiry}, it is now {now}")
        self.expiry = expiry
        self.now = now


# -- aggregates --------------------------------------------------------------------------------


class Listing(Aggregate):
    """A model for sale: what it is, its terms, its provenance and its sales and ratings."""

    @staticmethod
    def create_id(key: str) -> UUID:
        return UUID(key)

    @event("Listed")
    def __init__(
        self,
        key: str,
        creator: str,
        artifact: str,
        name: str,
        task: str,
        license: str,
        license_text: str,
        description: str,
        price: int,
        currency: str,
        royalty_bps: int,
        provenance: dict[str, Any] | None,
        hub: bool,
        request_price: int,
        listed_at: int,
    ) -> None:
        self.key = key
        self.creator = creator
        self.artifact = artifact
        self.name = name
        self.task = task
        self.license = license
        self.license_text = license_text
        self.description = description
        self.price = price
        self.currency = currency
        self.royalty_bps = royalty_bps
        # The provenance job's verification record, as it was when the model was listed.
        self.provenance = provenance
        self.hub = hub
        self.request_price = request_price
        self.listed_at = listed_at
        self.status = LISTED
        self.delisted_at = 0
        self.sales = 0
        self.revenue = 0
        self.rating_sum = 0
        self.rating_count = 0

    @property
    def listed(self) -> bool:
        return self.status == LISTED

    @event("Updated")
    def update(self, price: int, description: str, hub: bool, request_price: int) -> None:
        self.price = price
        self.description = description
        self.hub = hub
        self.request_price = request_price

    @event("Delisted")
    def delist(self, at: int) -> None:
        self.status = DELISTED
        self.delisted_at = at
        self.hub = False

    @event("Sold")
    def sold(self, buyer: str, price: int) -> None:
        self.sales += 1
        self.revenue += price

    @event("Reviewed")
    def reviewed(self, buyer: str, rating: int, previous: int) -> None:
        # `previous` is the buyer's earlier rating (0: none), which a revision replaces.
        self.rating_sum += rating - previous
        self.rating_count += 0 if previous else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.key,
            "creator": self.creator,
            "artifact": self.artifact,
            "name": self.name,
            "task": self.task,
            "license": self.license,
            "license_text": self.license_text,
            "description": self.description,
            "price": self.price,
            "currency": self.currency,
            "royalty_bps": self.royalty_bps,
            "provenance": self.provenance,
            "hub": self.hub,
            "request_price": self.request_price,
            "listed_at": self.listed_at,
            "status": self.status,
            "delisted_at": self.delisted_at,
            "sales": self.sales,
            "revenue": self.revenue,
            "rating_count": self.rating_count,
            "rating": rating_text(self.rating_sum, self.rating_count),
        }


def rating_text(total: int, count: int) -> str | None:
    """The average rating with two decimals, rounded down ("4.33"); None without ratings."""
    if not count:
        return None
    hundredths = total * 100 // count
    return f"{hundredths // 100}.{hundredths % 100:02d}"


class Grant(Aggregate):
    """A buyer's license to a listing's artifact, on the terms it was bought at."""

    @staticmethod
    def create_id(listing: str, buyer: str) -> UUID:
        return grant_id(listing, buyer)

    @event("Granted")
    def __init__(
        self,
        listing: str,
        buyer: str,
        artifact: str,
        license: str,
        price: int,
        currency: str,
        granted_at: int,
    ) -> None:
        self.listing = listing
        self.buyer = buyer
        self.artifact = artifact
        self.license = license
        self.price = price
        self.currency = currency
        self.granted_at = granted_at

    def to_json(self) -> dict[str, Any]:
        return {
            "listing": self.listing,
            "buyer": self.buyer,
            "artifact": self.artifact,
            "license": self.license,
            "price": self.price,
            "currency": self.currency,
            "granted_at": self.granted_at,
        }


class Review(Aggregate):
    """One buyer's rating of one listing; a later review by the same buyer revises it."""

    @staticmethod
    def create_id(listing: str, buyer: str) -> UUID:
        return review_id(listing, buyer)

    @event("Written")
    def __init__(self, listing: str, buyer: str, rating: int, text: str, at: int) -> None:
        self.listing = listing
        self.buyer = buyer
        self.rating = rating
        self.text = text
        self.at = at

    @event("Revised")
    def revise(self, rating: int, text: str, at: int) -> None:
        self.rating = rating
        self.text = text
        self.at = at

    def to_json(self) -> dict[str, Any]:
        return {
            "listing": self.listing,
            "buyer": self.buyer,
            "rating": self.rating,
            "text": self.text,
            "at": self.at,
        }


class HubRoster(Aggregate):
    """Every listing ever offered to hub subscribers, with its creator: the listings whose
    requests an epoch's close counts (a listing leaves the hub, not the roster)."""

    @staticmethod
    def create_id() -> UUID:
        return HUB_ROSTER_ID

    @event("Started")
    def __init__(self) -> None:
        self.listings: dict[str, str] = {}

    @event("ListingAdded")
    def add(self, listing: str, creator: str) -> None:
        self.listings[listing] = creator

    @property
    def creators(self) -> set[str]:
        return set(self.listings.values())


# -- splitting money exactly ----------------------------------------------------------------


def split_by_weight(amount: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split `amount` base units among the keys of `weights` in proportion, exactly.

    Largest remainder: each key first gets ⌊amount · w / W⌋; the units left over (fewer
    than the number of keys) go one each to the keys with the largest remainders
    amount · w mod W, ties to the smaller key. So the shares add up to `amount`, and each
    is within one unit of its exact proportion. Keys with weight 0 get 0.
    """
    if amount < 0 or any(w < 0 for w in weights.values()):
        raise InvalidInput("split: amounts and weights are non-negative")
    total = sum(weights.values())
    if total == 0:
        if amount:
            raise InvalidInput("split: nothing to weigh an amount by")
        return dict.fromkeys(weights, 0)
    shares = {k: amount * w // total for k, w in weights.items()}
    left = amount - sum(shares.values())
    by_remainder = sorted(weights, key=lambda k: (-(amount * weights[k] % total), k))
    for k in by_remainder[:left]:
        shares[k] += 1
    if sum(shares.values()) != amount or not 0 <= left < max(len(weights), 1):
        raise AssertionError(f"split of {amount} by {dict(weights)} gave {shares}")
    return shares


@dataclass(frozen=True, slots=True)
class PurchaseSplit:
    """Where a sale's price goes, in base units of its currency."""

    creator: int
    royalties: Mapping[str, int]
    platform: int

    @property
    def total(self) -> int:
        return self.creator + sum(self.royalties.values()) + self.platform


def purchase_split(
    price: int,
    currency: Asset,
    royalty_bps: int,
    providers: Mapping[str, int],
    schedule: FeeSchedule,
) -> PurchaseSplit:
    """Split a sale: the platform fee (⌊price · rate / 10,000⌋, lower in BLACK), the
    royalty (⌊price · royalty_bps / 10,000⌋) shared by `providers` in proportion to the
    segments each trained (`split_by_weight`), and the rest to the creator, who so takes
    every rounding remainder of the two rates."""
    platform = price * schedule.platform_rate(currency) // BPS_DENOMINATOR
    royalty = price * royalty_bps // BPS_DENOMINATOR if providers else 0
    royalties = split_by_weight(royalty, providers) if royalty else {}
    split = PurchaseSplit(price - platform - royalty, royalties, platform)
    if split.total != price or split.creator < 0:
        raise AssertionError(f"purchase split {split} does not divide {price}")
    return split


def _merged_credits(currency: Asset, amounts: list[tuple[str, str, int]]) -> list[Leg]:
    """One credit per (account, bucket), in first-seen order, zero amounts dropped."""
    merged: dict[tuple[str, str], int] = {}
    for account, bucket, amount in amounts:
        merged[(account, bucket)] = merged.get((account, bucket), 0) + amount
    return [credit(a, currency, b, amount) for (a, b), amount in merged.items() if amount]


def sale_legs(buyer: str, listing: Listing, schedule: FeeSchedule) -> list[Leg]:
    """The posting set of buying `listing` at its price (empty when it is free)."""
    if not listing.price:
        return []
    currency = Asset(listing.currency)
    providers = (
        listing.provenance["providers"] if listing.provenance and listing.royalty_bps else {}
    )
    split = purchase_split(listing.price, currency, listing.royalty_bps, providers, schedule)
    credits = [(listing.creator, AVAILABLE, split.creator)]
    credits += [(p, AVAILABLE, amount) for p, amount in sorted(split.royalties.items())]
    credits.append((TREASURY_ACCOUNT, TREASURY, split.platform))
    return [debit(buyer, currency, AVAILABLE, listing.price), *_merged_credits(currency, credits)]


# -- reading state ----------------------------------------------------------------------------


def _get(context: Context, cls: type[Any], key: str, what: str) -> Any:
    try:
        aggregate_id = UUID(key)
    except ValueError:
        raise NotFound(what, key) from None
    aggregate = context.state.get(aggregate_id)
    if not isinstance(aggregate, cls):
        raise NotFound(what, key)
    return aggregate


def _listing(context: Context, key: str) -> Listing:
    return _get(context, Listing, key, "listing")  # type: ignore[no-any-return]


def _own_listing(context: Context, command: VerifiedCommand) -> Listing:
    listing = _listing(context, command.message["listing"])
    if command.signer != listing.creator:
        raise UnauthorizedActor(command.signer, f"creator of listing {listing.key}")
    if not listing.listed:
        raise InvalidTransition(
            f"listing {listing.key} is {listing.status}", entity="listing", state=listing.status
        )
    return listing


def _roster(context: Context) -> HubRoster | None:
    roster = context.state.get(HUB_ROSTER_ID)
    return roster if isinstance(roster, HubRoster) else None


def _nothing() -> list[Aggregate]:
    return []


def _hub_admission(context: Context, listing: str, creator: str) -> Callable[[], list[Aggregate]]:
    """Check that `listing` may join the hub; the closure adds it to the roster (once)."""
    roster = _roster(context)
    if roster is not None and listing in roster.listings:
        return _nothing
    listings = roster.listings if roster is not None else {}
    creators = roster.creators if roster is not None else set()
    if len(listings) >= hub_listings_max:
        raise InvalidTransition(
            f"the hub holds its {hub_listings_max} listings", entity="hub", state="full"
        )
    if creator not in creators and len(creators) >= hub_creators_max:
        raise InvalidTransition(
            f"the hub pays at most {hub_creators_max} creators", entity="hub", state="full"
        )

    def admit() -> list[Aggregate]:
        target = roster if roster is not None else HubRoster()
        target.add(listing, creator)
        return [target]

    return admit


# -- provenance -----------------------------------------------------------------------------


def provenance_record(context: Context, signer: str, artifact: str, job_key: str) -> dict[str, Any]:
    """The verification record of `job_key`, if it may be `artifact`'s provenance: a
    completed job of `signer`'s whose final checkpoint is the artifact and whose every
    segment was accepted by its verifier (or cleared by a referee)."""
    job: Job = _get(context, Job, job_key, "job")
    if job.developer != signer:
        raise UnauthorizedActor(signer, f"developer of job {job.key}")
    if job.status != COMPLETED:
        raise InvalidTransition(
            f"job {job.key} is {job.status}: only a completed job is a provenance",
            entity="job",
            state=job.status,
        )
    if len(job.accepted) > provenance_segments_max:
        raise InvalidTransition(
            f"job {job.key} has {len(job.accepted)} segments, a provenance at most "
            f"{provenance_segments_max}",
            entity="job",
            state="too-long",
        )
    if job.checkpoint != artifact:
        raise InvalidInput(
            f"artifact: job {job.key}'s final checkpoint is {job.checkpoint}",
            field="message.artifact",
        )
    providers: dict[str, int] = {}
    steps = reexecuted = accepted = cleared = 0
    for record in job.accepted:
        commitment = context.state.get(UUID(record["commitment"]))
        if not isinstance(commitment, Commitment) or commitment.status != "accepted":
            raise InvalidTransition(
                f"segment {record['segment']} of job {job.key} was not verified",
                entity="segment",
                state="unverified",
            )
        steps += commitment.steps
        reexecuted += commitment.samples
        cleared += commitment.dispute is not None
        accepted += commitment.dispute is None
        providers[record["provider"]] = providers.get(record["provider"], 0) + 1
    # A completed job accepted every segment, which together cover every step.
    total_steps = job.spec["total_steps"]
    if steps != total_steps or len(job.accepted) != len(job.segments):
        raise AssertionError(f"job {job.key} completed with {steps} of {total_steps} steps")
    return {
        "job": job.key,
        "spec_hash": job.spec_hash,
        "mode": job.spec["verification"]["mode"],
        "detection_probability": job.spec["verification"]["detection_probability"],
        "segments": len(job.accepted),
        "verified_steps": steps,
        "reexecuted_steps": reexecuted,
        "verdicts": {"accepted": accepted, "cleared_on_dispute": cleared},
        "providers": dict(sorted(providers.items())),
        "final_checkpoint": job.checkpoint,
    }


# -- the commands ------------------------------------------------------------------------------


def _check_terms(m: Mapping[str, Any]) -> None:
    name = m["name"]
    if not name.strip() or len(name) > name_chars_max or not name.isprintable():
        raise InvalidInput(f"name: 1-{name_chars_max} printable characters", field="message.name")
    if m["task"] not in TASKS:
        raise InvalidInput(f"task: one of {', '.join(TASKS)}", field="message.task")
    if m["license"] not in LICENSES:
        raise InvalidInput(f"license: one of {', '.join(LICENSES)}", field="message.license")
    if m["license"] == CUSTOM_LICENSE and not m["licenseText"].strip():
        raise InvalidInput(
            "licenseText: a custom license states its terms", field="message.licenseText"
        )


def _check_hub_terms(m: Mapping[str, Any]) -> None:
    if m["requestPrice"] and not m["hub"]:
        raise InvalidInput(
            "requestPrice: only a hub model is sold per request", field="message.requestPrice"
        )


def _list_model(context: Context, command: VerifiedCommand) -> Decision:
    m, signer = command.message, command.signer
    _check_terms(m)
    _check_hub_terms(m)
    if m["royaltyBps"] > royalty_bps_max:
        raise InvalidInput(f"royaltyBps: at most {royalty_bps_max}", field="message.royaltyBps")
    if m["royaltyBps"] and not m["provenanceJob"]:
        raise InvalidInput(
            "royaltyBps: a royalty goes to the providers of a provenance job",
            field="message.royaltyBps",
        )
    artifact = m["artifact"]
    key = listing_key(artifact)
    # The provenance first: naming another's job is refused as such (403), listed or not.
    provenance = None
    if m["provenanceJob"]:
        provenance = provenance_record(context, signer, artifact, m["provenanceJob"])
        if m["royaltyBps"] and len(provenance["providers"]) > royalty_providers_max:
            raise InvalidInput(
                f"royaltyBps: a royalty is shared by at most {royalty_providers_max} providers",
                field="message.royaltyBps",
            )
    existing = context.state.get(UUID(key))
    if isinstance(existing, Listing):
        raise InvalidTransition(
            f"artifact {artifact} is already listed as {key}", entity="listing", state="listed"
        )
    admit = _hub_admission(context, key, signer) if m["hub"] else _nothing

    def apply() -> list[Aggregate]:
        listing = Listing(
            key=key,
            creator=signer,
            artifact=artifact,
            name=m["name"],
            task=m["task"],
            license=m["license"],
            license_text=m["licenseText"],
            description=m["description"],
            price=m["price"],
            currency=m["asset"],
            royalty_bps=m["royaltyBps"],
            provenance=provenance,
            hub=m["hub"],
            request_price=m["requestPrice"],
            listed_at=context.now,
        )
        return [listing, *admit()]

    return Decision([], apply, {"listing": key, "artifact": artifact})


def _update_listing(context: Context, command: VerifiedCommand) -> Decision:
    m = command.message
    listing = _own_listing(context, command)
    _check_hub_terms(m)
    admit = _hub_admission(context, listing.key, listing.creator) if m["hub"] else _nothing

    def apply() -> list[Aggregate]:
        listing.update(m["price"], m["description"], m["hub"], m["requestPrice"])
        return [listing, *admit()]

    return Decision([], apply, {"listing": listing.key, "price": m["price"]})


def _delist(context: Context, command: VerifiedCommand) -> Decision:
    listing = _own_listing(context, command)

    def apply() -> list[Aggregate]:
        listing.delist(context.now)
        return [listing]

    return Decision([], apply, {"listing": listing.key, "status": DELISTED})


def _buy_model(context: Context, command: VerifiedCommand) -> Decision:
    m, buyer = command.message, command.signer
    listing = _listing(context, m["listing"])
    if not listing.listed:
        raise InvalidTransition(
            f"listing {listing.key} is {listing.status}", entity="listing", state=listing.status
        )
    if buyer == listing.creator:
        raise InvalidTransition(
            f"{buyer} created listing {listing.key}", entity="listing", state="own"
        )
    if isinstance(context.state.get(grant_id(listing.key, buyer)), Grant):
        raise InvalidTransition(
            f"{buyer} already holds a license to listing {listing.key}",
            entity="grant",
            state="granted",
        )
    if (m["price"], m["asset"]) != (listing.price, listing.currency):
        # The buyer signs the price it agreed to: a price changed since it looked is a
        # conflict it resolves by signing again, never a silent charge.
        raise InvalidTransition(
            f"listing {listing.key} costs {listing.price} {listing.currency}, "
            f"not {m['price']} {m['asset']}",
            entity="listing",
            state="price",
        )
    legs = sale_legs(buyer, listing, context.params.fees)

    def apply() -> list[Aggregate]:
        grant = Grant(
            listing=listing.key,
            buyer=buyer,
            artifact=listing.artifact,
            license=listing.license,
            price=listing.price,
            currency=listing.currency,
            granted_at=context.now,
        )
        listing.sold(buyer, listing.price)
        return [grant, listing]

    outcome = {
        "listing": listing.key,
        "grant": str(grant_id(listing.key, buyer)),
        "paid": listing.price,
        "currency": listing.currency,
    }
    return Decision(legs, apply, outcome)


def _review_model(context: Context, command: VerifiedCommand) -> Decision:
    m, buyer = command.message, command.signer
    listing = _listing(context, m["listing"])
    if not rating_min <= m["rating"] <= rating_max:
        raise InvalidInput(f"rating: {rating_min} to {rating_max}", field="message.rating")
    if not isinstance(context.state.get(grant_id(listing.key, buyer)), Grant):
        raise UnauthorizedActor(buyer, f"buyer of listing {listing.key}")
    review = context.state.get(review_id(listing.key, buyer))
    previous = review.rating if isinstance(review, Review) else 0

    def apply() -> list[Aggregate]:
        if isinstance(review, Review):
            review.revise(m["rating"], m["text"], context.now)
            written = review
        else:
            written = Review(
                listing=listing.key, buyer=buyer, rating=m["rating"], text=m["text"], at=context.now
            )
        listing.reviewed(buyer, m["rating"], previous)
        return [written, listing]

    return Decision([], apply, {"listing": listing.key, "rating": m["rating"]})


HANDLERS: Mapping[str, Callable[[Context, VerifiedCommand], Decision]] = {
    "ListModel": _list_model,
    "UpdateListing": _update_listing,
    "Delist": _delist,
    "BuyModel": _buy_model,
    "ReviewModel": _review_model,
}


# -- download tokens -------------------------------------------------------------------------


def _document(chain_id: int, primary: str, fields: list[tuple[str, str]], message: Any) -> Any:
    return {
        "types": {
            "EIP712Domain": _EIP712_DOMAIN,
            primary: [{"name": n, "type": t} for n, t in fields],
        },
        "primaryType": primary,
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
        "message": message,
    }


def download_request_digest(chain_id: int, listing: str, expiry: int) -> bytes:
    """The EIP-712 digest a buyer signs to ask for a download token."""
    fields = [("listing", "string"), ("expiry", "uint64")]
    document = _document(
        chain_id, "DownloadRequest", fields, {"listing": listing, "expiry": expiry}
    )
    return eip712.hash_typed_data(document)


def download_token_digest(
    chain_id: int, listing: str, buyer: str, artifact: str, expiry: int
) -> bytes:
    """The EIP-712 digest the operator signs as a download token."""
    fields = [
        ("listing", "string"),
        ("buyer", "address"),
        ("artifact", "bytes32"),
        ("expiry", "uint64"),
    ]
    message = {"listing": listing, "buyer": buyer, "artifact": artifact, "expiry": expiry}
    return eip712.hash_typed_data(_document(chain_id, "DownloadToken", fields, message))


def sign_download_request(key: PrivateKey, chain_id: int, listing: str, expiry: int) -> str:
    """A buyer's signed request for a token: 0x + 65 bytes."""
    return "0x" + key.sign_digest(download_request_digest(chain_id, listing, expiry)).hex()


def check_download_request(
    chain_id: int, listing: str, buyer: str, expiry: int, signature: str, now: int
) -> None:
    """Raise unless `signature` is `buyer`'s request for `listing`, not expired and not
    valid for longer than `download_request_seconds_max`."""
    if expiry < now:
        raise CommandExpired(expiry, now)
    if expiry > now + download_request_seconds_max:
        raise InvalidInput(
            f"expiry: at most {download_request_seconds_max} s ahead", field="expiry"
        )
    recovered = recover_address(
        download_request_digest(chain_id, listing, expiry), _signature(signature)
    )
    if recovered != buyer:
        raise WrongSigner(buyer, recovered)


@dataclass(frozen=True, slots=True)
class DownloadToken:
    """The operator's permission for `buyer` to fetch `listing`'s artifact until `expiry`.

    Written `<buyer>.<expiry>.<signature>`: the listing and its artifact come from the
    URL the token is presented at, so a token moved to another listing does not verify.
    """

    buyer: str
    expiry: int
    signature: str

    def encode(self) -> str:
        return f"{self.buyer}.{self.expiry}.{self.signature}"


def issue_download_token(
    operator: PrivateKey, chain_id: int, listing: str, buyer: str, artifact: str, now: int
) -> DownloadToken:
    expiry = now + download_token_seconds
    digest = download_token_digest(chain_id, listing, buyer, artifact, expiry)
    return DownloadToken(buyer, expiry, "0x" + operator.sign_digest(digest).hex())


def check_download_token(
    text: str, chain_id: int, operator: str, listing: str, artifact: str, now: int
) -> str:
    """The buyer a token was issued to, if `operator` issued it for `listing`'s `artifact`
    and it has not expired; InvalidToken or TokenExpired otherwise."""
    match = _TOKEN.fullmatch(text)
    if match is None:
        raise InvalidToken("expected <buyer>.<expiry>.<signature>")
    try:
        buyer = parse_address(match.group(1), "token.buyer")
        expiry = int(match.group(2))
        if expiry >= 2**64:
            raise InvalidToken("the expiry does not fit uint64")
        digest = download_token_digest(chain_id, listing, buyer, artifact, expiry)
        signer = recover_address(digest, _signature(match.group(3)))
    except InvalidToken:
        raise
    except ProtocolError as error:
        raise InvalidToken(str(error)) from None
    if signer != operator:
        raise InvalidToken("not signed by the operator for this listing and buyer")
    if expiry < now:
        raise TokenExpired(expiry, now)
    return buyer


def _signature(text: str) -> bytes:
    if not re.fullmatch(r"0x[0-9a-fA-F]{130}", text):
        raise InvalidInput("signature: expected 0x and 65 bytes of hex", field="signature")
    return bytes.fromhex(text[2:])

"""DMarket's resources: listings, their provenance, purchases, reviews, download tokens
and artifact downloads (specs/market.md, specs/api.md).

Every POST that changes the ledger takes a signed command of exactly one kind, in the
body `POST /commands` takes; a listing id in the path must be the one the message names.
A paid model's artifact is served only at `/market/listings/<id>/artifact` with a
download token, and `GET /blobs/<digest>` refuses it (grant-required): a paid artifact
never leaves the gateway through the public blob route.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import marshmallow as ma
from flask import Response, request, send_file

from node.blobs import InvalidDigest, MediaType, parse_digest
from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.commands import command_route
from node.gateway.market_schemas import (
    GrantSchema,
    ListingSchema,
    ProvenanceDetailSchema,
    ReviewSchema,
    TokenArgsSchema,
    TokenRequestSchema,
    TokenSchema,
)
from node.gateway.paging import Page, page_args_schema, page_schema
from node.gateway.problems import INVALID_REQUEST, Problem
from node.gateway.services import Services
from protocol.errors import NotFound
from protocol.jobs import Commitment, Job
from protocol.keys import parse_address
from protocol.market import (
    Grant,
    GrantRequired,
    Listing,
    Review,
    check_download_request,
    check_download_token,
    grant_id,
    issue_download_token,
    listing_key,
)

_IMMUTABLE_SECONDS = 365 * 24 * 3600
_BLOB_RULE = "/blobs/<digest>"


def query_filters(name: str, **fields: str) -> type[ma.Schema]:
    return ma.Schema.from_dict(
        {
            key: ma.fields.String(load_default=None, metadata={"description": text})
            for key, text in fields.items()
        },
        name=name,
    )


def catalog_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 12:
        raise Problem(
            INVALID_REQUEST,
            f"cursor {cursor!r} is not a cursor this list gave",
            errors={"query": {"cursor": ["expected the next_cursor of the previous page"]}},
        )
    return int(cursor)


def find_listing(services: Services, key: str) -> Listing:
    """A listing read from the store (strongly consistent); NotFound if there is none."""
    try:
        listing = services.network.get(UUID(key))
    except ValueError:
        raise NotFound("listing", key) from None
    if not isinstance(listing, Listing):
        raise NotFound("listing", key)
    return listing


def _keep(**wanted: Any) -> Callable[[Listing], bool] | None:
    active = {name: value for name, value in wanted.items() if value is not None}
    if not active:
        return None
    return lambda item: all(getattr(item, name) == value for name, value in active.items())


def _flag(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    if value not in ("true", "false"):
        raise Problem(
            INVALID_REQUEST, f"{name}: true or false", errors={"query": {name: ["true or false"]}}
        )
    return value == "true"


def blueprint(services: Services) -> GatewayBlueprint:
    blp = GatewayBlueprint(
        "market", __name__, description="DMarket: listings, purchases, licenses, downloads"
    )
    network, catalog, store = services.network, services.catalog, services.blobs
    page_args = page_args_schema(services.config)

    def grant_or_creator(listing: Listing, account: str) -> bool:
        return account == listing.creator or isinstance(
            network.get(grant_id(listing.key, account)), Grant
        )

    @blp.before_app_request
    def guard_paid_artifacts() -> None:
        # A paid model's artifact is a blob like any other, so the public blob route
        # must not hand it out: only the market's route, with a token, does.
        rule = request.url_rule
        if rule is None or rule.rule != _BLOB_RULE or request.method not in ("GET", "HEAD"):
            return
        try:
            digest = parse_digest(str((request.view_args or {}).get("digest", "")))
        except InvalidDigest:
            return  # the blob route answers that itself
        listing = network.get(UUID(listing_key("0x" + digest)))
        if isinstance(listing, Listing) and listing.price:
            raise GrantRequired(
                listing.key,
                None,
                f"0x{digest} is the artifact of paid listing {listing.key}: download it from "
                f"/market/listings/{listing.key}/artifact with a token",
            )

    # -- listings ----------------------------------------------------------------------

    command_route(blp, services, "/market/listings", "ListModel", None, "List a model for sale.")
    command_route(
        blp,
        services,
        "/market/listings/<listing>/update",
        "UpdateListing",
        "listing",
        "Change a listing's price, description and hub offer.",
    )
    command_route(
        blp,
        services,
        "/market/listings/<listing>/delist",
        "Delist",
        "listing",
        "Stop selling a model; licenses already granted keep working.",
    )
    command_route(
        blp,
        services,
        "/market/listings/<listing>/purchase",
        "BuyModel",
        "listing",
        "Buy a license to a model.",
    )
    command_route(
        blp,
        services,
        "/market/listings/<listing>/reviews",
        "ReviewModel",
        "listing",
        "Rate a model you bought (1 to 5).",
    )

    listing_filters = query_filters(
        "ListingFilters",
        creator="address",
        task="classification | regression | embedding | generation | other",
        status="listed | delisted",
        hub="true | false",
    )

    @blp.route("/market/listings")
    @blp.arguments(listing_filters, location="query", as_kwargs=False)
    @blp.arguments(page_args, location="query", as_kwargs=False)
    @blp.response(200, page_schema("ListingPage", ListingSchema))
    @documents_problems(blp, 400)
    def list_listings(query: dict[str, Any], args: dict[str, Any]) -> Page:
        """Listings in the order listed, filtered by creator, task, status or hub."""
        creator = None if query["creator"] is None else parse_address(query["creator"], "creator")
        keep = _keep(
            creator=creator,
            task=query["task"],
            status=query["status"],
            hub=_flag(query["hub"], "hub"),
        )
        items, position = catalog.page(Listing, catalog_cursor(args["cursor"]), args["limit"], keep)
        return Page([i.to_json() for i in items], None if position is None else str(position))

    @blp.route("/market/listings/<listing>")
    @blp.response(200, ListingSchema)
    @documents_problems(blp, 404)
    def get_listing(listing: str) -> dict[str, Any]:
        """A listing: terms, provenance summary, sales and rating."""
        return find_listing(services, listing).to_json()

    @blp.route("/market/listings/<listing>/provenance")
    @blp.response(200, ProvenanceDetailSchema)
    @documents_problems(blp, 404)
    def get_provenance(listing: str) -> dict[str, Any]:
        """The verification record of the job that trained a model, segment by segment."""
        found = find_listing(services, listing)
        if found.provenance is None:
            raise NotFound("provenance of listing", found.key)
        job = network.get(UUID(found.provenance["job"]))
        assert isinstance(job, Job), "a provenance names a recorded job"
        segments = []
        for record in job.accepted:
            commitment = network.get(UUID(record["commitment"]))
            assert isinstance(commitment, Commitment), "an accepted segment has a commitment"
            start, end = job.segments[record["segment"]]
            segments.append(
                {
                    "segment": record["segment"],
                    "start_step": start,
                    "end_step": end,
                    "provider": record["provider"],
                    "verifier": record["verifier"],
                    "commitment": commitment.key,
                    "root": commitment.root,
                    "end_checkpoint": commitment.end_checkpoint,
                    "reexecuted_steps": commitment.samples,
                    "verdict": commitment.verdict,
                    "dispute": commitment.dispute,
                }
            )
        return {"listing": found.key, "provenance": found.provenance, "segments": segments}

    @blp.route("/market/listings/<listing>/grants/<address>")
    @blp.response(200, GrantSchema)
    @documents_problems(blp, 400, 404)
    def get_grant(listing: str, address: str) -> dict[str, Any]:
        """The license an address bought, if it did."""
        found = find_listing(services, listing)
        buyer = parse_address(address, "address")
        grant = network.get(grant_id(found.key, buyer))
        if not isinstance(grant, Grant):
            raise NotFound("grant", f"{found.key}/{buyer}")
        return grant.to_json()

    @blp.route("/market/listings/<listing>/reviews")
    @blp.arguments(page_args, location="query", as_kwargs=False)
    @blp.response(200, page_schema("ReviewPage", ReviewSchema))
    @documents_problems(blp, 400, 404)
    def list_reviews(args: dict[str, Any], listing: str) -> Page:
        """A listing's reviews, in the order first written."""
        found = find_listing(services, listing)
        items, position = catalog.page(
            Review,
            catalog_cursor(args["cursor"]),
            args["limit"],
            lambda review: review.listing == found.key,
        )
        return Page([i.to_json() for i in items], None if position is None else str(position))

    # -- downloads ---------------------------------------------------------------------

    @blp.route("/market/listings/<listing>/token", methods=["POST"])
    @blp.arguments(TokenRequestSchema)
    @blp.response(200, TokenSchema)
    @documents_problems(blp, 400, 403, 404, 413, 415)
    def post_token(body: dict[str, Any], listing: str) -> dict[str, Any]:
        """A download token for a buyer (or the creator) who signs a DownloadRequest."""
        found = find_listing(services, listing)
        buyer = parse_address(body["buyer"], "buyer")
        now = int(time.time())
        check_download_request(
            services.chain_id, found.key, buyer, body["expiry"], body["signature"], now
        )
        if not grant_or_creator(found, buyer):
            raise GrantRequired(found.key, buyer)
        token = issue_download_token(
            services.operator, services.chain_id, found.key, buyer, found.artifact, now
        )
        return {
            "token": token.encode(),
            "listing": found.key,
            "buyer": buyer,
            "expires_at": token.expiry,
            "url": f"/market/listings/{found.key}/artifact?token={token.encode()}",
        }

    @blp.route("/market/listings/<listing>/artifact")
    @blp.arguments(TokenArgsSchema, location="query")
    @blp.response(
        200,
        content_type=MediaType.OCTET_STREAM.value,
        description="The artifact's bytes (HEAD: its headers); Range requests are served",
    )
    @documents_problems(blp, 400, 403, 404)
    def get_artifact(args: dict[str, Any], listing: str) -> Response:
        """Download a model: free ones by anyone, paid ones with a download token."""
        found = find_listing(services, listing)
        if found.price:
            token = args["token"]
            if token is None:
                raise GrantRequired(
                    found.key,
                    None,
                    f"listing {found.key} is paid: ask POST /market/listings/{found.key}/token "
                    "for a download token",
                )
            buyer = check_download_token(
                token,
                services.chain_id,
                services.operator.address,
                found.key,
                found.artifact,
                int(time.time()),
            )
            if not grant_or_creator(found, buyer):
                raise GrantRequired(found.key, buyer)
        hex_digest = parse_digest(found.artifact)
        store.size(hex_digest)  # BlobNotFound (404) before send_file opens it
        response = send_file(
            store.path(hex_digest),
            mimetype=MediaType.OCTET_STREAM.value,
            etag=found.artifact,
            conditional=True,
            max_age=0 if found.price else _IMMUTABLE_SECONDS,
        )
        if found.price:
            # A licensed copy is the buyer's: no shared cache may keep it.
            response.cache_control.private = True
            response.cache_control.no_store = True
        return response

    return blp

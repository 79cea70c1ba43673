"""The GenAI Hub's resources: plans, subscriptions, hub models, metered inference and the
revenue-sharing epochs (specs/market.md, specs/api.md).

`POST /hub/models/<id>/predict` takes `{command, inputs}`: a `HubRequest` the caller
signed, whose `inputDigest` is the digest of `inputs` (`protocol.hub.input_digest`). The
gateway loads the model (from its safetensors artifact, cached in this worker) and checks
the inputs fit it, then records the request in the ledger, metered against the caller's
subscription or paid for, and only then runs the model: a request the ledger refuses
(429 past the quota, 409 without funds) computes nothing, and every answer computed was
metered. A retry of the same signed request is answered again without being metered twice.
"""

from __future__ import annotations

from typing import Any

from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.commands import command_route, submit_command
from node.gateway.market import catalog_cursor, find_listing, query_filters
from node.gateway.market_schemas import (
    EpochSchema,
    HubModelSchema,
    HubSchema,
    PredictRequestSchema,
    PredictResultSchema,
    SubscriptionSchema,
)
from node.gateway.paging import Page, page_args_schema, page_schema, parse_position, position_cursor
from node.gateway.services import Services
from protocol.commands import SignedCommand
from protocol.errors import InvalidInput, InvalidTransition, NotFound
from protocol.hub import (
    HUB_ID,
    Hub,
    HubMeter,
    Subscription,
    input_digest,
    meter_id,
    subscription_id,
)
from protocol.keys import parse_address
from protocol.market import Listing


def blueprint(services: Services) -> GatewayBlueprint:
    blp = GatewayBlueprint(
        "hub", __name__, description="GenAI Hub: plans, subscriptions, metered inference"
    )
    network, catalog = services.network, services.catalog
    page_args = page_args_schema(services.config)

    def hub_state() -> Hub | None:
        hub = network.get(HUB_ID)
        return hub if isinstance(hub, Hub) else None

    def meter_of(listing: str) -> dict[str, Any]:
        meter = network.get(meter_id(listing))
        if isinstance(meter, HubMeter):
            return meter.to_json()
        return {"listing": listing, "subscribed": 0, "paid": 0, "charged": 0}

    command_route(blp, services, "/hub/plans", "SetHubPlan", None, "Offer or change a plan.")
    command_route(
        blp, services, "/hub/subscriptions", "Subscribe", None, "Subscribe for one period."
    )
    command_route(
        blp, services, "/hub/epochs", "CloseHubEpoch", None, "Share the pool among creators."
    )

    @blp.route("/hub")
    @blp.response(200, HubSchema)
    def get_hub() -> dict[str, Any]:
        """The hub's plans, its subscription pool and the last closed epoch."""
        hub = hub_state()
        return hub.to_json() if hub is not None else {"plans": [], "pool": {}, "last_epoch": 0}

    @blp.route("/hub/subscriptions/<address>")
    @blp.response(200, SubscriptionSchema)
    @documents_problems(blp, 400, 404)
    def get_subscription(address: str) -> dict[str, Any]:
        """An address's subscription: plan, quota, requests used, period."""
        subscriber = parse_address(address, "address")
        subscription = network.get(subscription_id(subscriber))
        if not isinstance(subscription, Subscription):
            raise NotFound("subscription", subscriber)
        return subscription.to_json()

    @blp.route("/hub/models")
    @blp.arguments(
        query_filters("HubModelFilters", creator="address"), location="query", as_kwargs=False
    )
    @blp.arguments(page_args, location="query", as_kwargs=False)
    @blp.response(200, page_schema("HubModelPage", HubModelSchema))
    @documents_problems(blp, 400)
    def list_models(query: dict[str, Any], args: dict[str, Any]) -> Page:
        """The models the hub serves now, in the order listed, with their meters."""
        creator = None if query["creator"] is None else parse_address(query["creator"], "creator")

        def keep(listing: Listing) -> bool:
            return listing.hub and listing.listed and creator in (None, listing.creator)

        items, position = catalog.page(Listing, catalog_cursor(args["cursor"]), args["limit"], keep)
        return Page(
            [{**i.to_json(), "meter": meter_of(i.key)} for i in items],
            None if position is None else str(position),
        )

    @blp.route("/hub/models/<listing>")
    @blp.response(200, HubModelSchema)
    @documents_problems(blp, 404)
    def get_model(listing: str) -> dict[str, Any]:
        """A hub model: its listing and the requests it served."""
        found = find_listing(services, listing)
        return {**found.to_json(), "meter": meter_of(found.key)}

    @blp.route("/hub/epochs")
    @blp.arguments(page_args, location="query", as_kwargs=False)
    @blp.response(200, page_schema("EpochPage", EpochSchema))
    @documents_problems(blp, 400)
    def list_epochs(args: dict[str, Any]) -> Page:
        """Closed epochs in order: requests counted, payouts, fees, what was carried."""
        hub = hub_state()
        epochs = hub.epochs if hub is not None else []
        start = parse_position(args["cursor"], size=len(epochs))
        items = epochs[start : start + args["limit"]]
        return Page(items, position_cursor(start + len(items), len(epochs)))

    @blp.route("/hub/models/<listing>/predict", methods=["POST"])
    @blp.arguments(PredictRequestSchema)
    @blp.response(200, PredictResultSchema)
    @documents_problems(blp, 400, 403, 404, 409, 413, 415, 429, 503)
    def predict(body: dict[str, Any], listing: str) -> dict[str, Any]:
        """Run a hub model on rows of inputs, metered in the ledger."""
        signed = SignedCommand.from_json(body["command"])
        if signed.kind != "HubRequest":
            raise InvalidInput("command.kind: this endpoint takes HubRequest", field="kind")
        if signed.message.get("listing") != listing:
            raise InvalidInput(
                "message.listing: must be the listing in the path", field="message.listing"
            )
        inputs: list[list[float]] = body["inputs"]
        digest = input_digest(inputs)
        if str(signed.message.get("inputDigest", "")).lower() != digest:
            raise InvalidInput(
                f"message.inputDigest: the inputs sent hash to {digest}",
                field="message.inputDigest",
            )
        found = find_listing(services, listing)
        if not (found.hub and found.listed):
            raise InvalidTransition(
                f"listing {found.key} is not served by the hub",
                entity="listing",
                state="not-in-hub",
            )
        model = services.hub_models.get(found.artifact)
        if len(inputs[0]) != model.input_width:
            raise InvalidInput(
                f"inputs: the model takes rows of {model.input_width} values, not {len(inputs[0])}",
                field="inputs",
            )
        result = submit_command(services, signed)
        prediction = model.predict(inputs)
        return {
            "listing": found.key,
            "command_id": result.command_id,
            "metering": result.outcome,
            "outputs": prediction.logits,
            "predictions": prediction.classes,
        }

    return blp

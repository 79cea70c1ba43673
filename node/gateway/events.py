"""The auditor's feed: GET /events (pages of log leaves, each with its inclusion proof
against the signed tree head in the same page), GET /tree-head and
GET /tree-head/consistency. Formats: specs/api.md and specs/log.md."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.paging import page_args_schema, page_schema, parse_position, position_cursor
from node.gateway.problems import INVALID_REQUEST, Problem
from node.gateway.services import Services
from protocol.log import SignedTreeHead


class TreeHeadSchema(ma.Schema):
    """The operator's EIP-712 signature over (size, root, timestamp): specs/log.md."""

    size = ma.fields.Integer(required=True)
    root = ma.fields.String(required=True, metadata={"description": "0x + 32 bytes"})
    timestamp = ma.fields.Integer(required=True, metadata={"description": "ms since the epoch"})
    chain_id = ma.fields.Integer(required=True)
    operator = ma.fields.String(required=True)
    signature = ma.fields.String(required=True, metadata={"description": "0x + 65 bytes"})


class EventEntrySchema(ma.Schema):
    leaf = ma.fields.Dict(
        required=True,
        metadata={"description": "The leaf object (specs/log.md); its canonical JSON is hashed"},
    )
    leaf_hash = ma.fields.String(required=True, metadata={"description": "SHA-256(0x00 ‖ leaf)"})
    proof = ma.fields.List(
        ma.fields.String(),
        required=True,
        metadata={"description": "Inclusion proof (RFC 6962) against the page's tree_head"},
    )


class ConsistencyArgsSchema(ma.Schema):
    old_size = ma.fields.Integer(data_key="from", required=True, validate=ma.validate.Range(min=0))
    size = ma.fields.Integer(
        data_key="to",
        load_default=None,
        validate=ma.validate.Range(min=0),
        metadata={"description": "Default: the size of the latest signed tree head"},
    )


class ConsistencySchema(ma.Schema):
    old_size = ma.fields.Integer(data_key="from", required=True)
    size = ma.fields.Integer(data_key="to", required=True)
    proof = ma.fields.List(ma.fields.String(), required=True)
    tree_head = ma.fields.Nested(
        TreeHeadSchema, required=True, metadata={"description": "The latest signed tree head"}
    )


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def blueprint(services: Services) -> GatewayBlueprint:
    blp = GatewayBlueprint("events", __name__, description="The tamper-evident event log")
    feed = services.feed
    events_page = page_schema(
        "EventsPage",
        EventEntrySchema,
        tree_head=ma.fields.Nested(TreeHeadSchema, required=True),
    )

    @blp.route("/events")
    @blp.arguments(page_args_schema(services.config), location="query")
    @blp.response(200, events_page)
    @documents_problems(blp, 400)
    def list_events(args: dict[str, Any]) -> dict[str, Any]:
        """Leaves from the cursor (a log position) on, each proven against the page's
        signed tree head; to follow the log, poll with cursor = tree_head.size."""
        size = feed.sync()
        page = feed.page(parse_position(args["cursor"], size=size), args["limit"])
        return {
            "items": [
                {
                    "leaf": entry.leaf,
                    "leaf_hash": _hex(entry.leaf_hash),
                    "proof": [_hex(p) for p in entry.proof],
                }
                for entry in page.entries
            ],
            "next_cursor": position_cursor(page.next_position, page.tree_head.size),
            "tree_head": page.tree_head.to_json(),
        }

    @blp.route("/tree-head")
    @blp.response(200, TreeHeadSchema)
    def tree_head() -> dict[str, Any]:
        """The operator's signed head over the whole log."""
        return feed.head().to_json()

    @blp.route("/tree-head/consistency")
    @blp.arguments(ConsistencyArgsSchema, location="query")
    @blp.response(200, ConsistencySchema)
    @documents_problems(blp, 400)
    def consistency(args: dict[str, Any]) -> dict[str, Any]:
        """The proof that the log at size `from` is a prefix of the log at size `to`."""
        head: SignedTreeHead = feed.head()
        size = head.size if args["size"] is None else args["size"]
        if not args["old_size"] <= size <= head.size:
            raise Problem(
                INVALID_REQUEST,
                f"expected from <= to <= {head.size}, got from={args['old_size']}, to={size}",
                errors={"query": {"from": ["must not exceed to"], "to": [f"at most {head.size}"]}},
            )
        proof = feed.consistency_proof(args["old_size"], size)
        return {
            "old_size": args["old_size"],
            "size": size,
            "proof": [_hex(p) for p in proof],
            "tree_head": head.to_json(),
        }

    return blp

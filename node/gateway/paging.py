"""Cursor paging for the gateway's list endpoints.

A list endpoint takes `?cursor=&limit=` and answers `{"items": [...], "next_cursor": …}`.
`next_cursor` is null on the last page; otherwise the client passes it back unchanged to
get the next page. A cursor is an opaque string to clients; positional lists (the event
log) use the decimal position of the next item, which a client may also build itself.
`limit` defaults to `page_items_default` and may not exceed `page_items_max`: a larger
value is refused (400 invalid-request), never silently cut.

Writing a paged endpoint:

    def blueprint(services: Services) -> GatewayBlueprint:
        blp = GatewayBlueprint("jobs", __name__, description="Training jobs")
        JobsPage = page_schema("JobsPage", JobSchema)

        @blp.route("/jobs")
        @blp.arguments(page_args_schema(services.config), location="query")
        @blp.response(200, JobsPage)
        def list_jobs(args: dict[str, Any]) -> Page:
            start = parse_position(args["cursor"], size=len(jobs))
            items = jobs[start : start + args["limit"]]
            return Page(items, position_cursor(start + len(items), len(jobs)))

        return blp
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import marshmallow as ma

from node.gateway.config import GatewayConfig
from node.gateway.problems import INVALID_REQUEST, Problem

cursor_chars_max = 200


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its items and the cursor of the next page (None at the end)."""

    items: Sequence[Any]
    next_cursor: str | None


def page_args_schema(config: GatewayConfig) -> type[ma.Schema]:
    """The query schema `cursor` and `limit`, with this gateway's limits (so that the
    OpenAPI document states them)."""
    return ma.Schema.from_dict(
        {
            "cursor": ma.fields.String(
                load_default=None,
                validate=ma.validate.Length(min=1, max=cursor_chars_max),
                metadata={"description": "next_cursor of the previous page; omit for the first"},
            ),
            "limit": ma.fields.Integer(
                load_default=config.page_items_default,
                validate=ma.validate.Range(min=1, max=config.page_items_max),
                metadata={"description": "Items per page"},
            ),
        },
        name="PageArgs",
    )


def page_schema(
    name: str, item_schema: type[ma.Schema] | ma.Schema, **extra: ma.fields.Field[Any]
) -> type[ma.Schema]:
    """The response schema of a page of `item_schema` items, named `name` in the
    OpenAPI document; `extra` adds fields beside items and next_cursor."""
    fields: dict[str, ma.fields.Field[Any]] = {
        "items": ma.fields.List(ma.fields.Nested(item_schema), required=True),
        "next_cursor": ma.fields.String(
            required=True,
            allow_none=True,
            metadata={"description": "Pass as ?cursor= for the next page; null on the last"},
        ),
        **extra,
    }
    return ma.Schema.from_dict(fields, name=name)


def position_cursor(next_position: int, size: int) -> str | None:
    """The cursor of a positional list's next page: None once `size` is reached."""
    return str(next_position) if next_position < size else None


def parse_position(cursor: str | None, *, size: int) -> int:
    """The position a positional cursor names (0 without one); at most `size`, which
    gives an empty last page."""
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > size:
        raise Problem(
            INVALID_REQUEST,
            f"cursor {cursor!r} is not a position between 0 and {size}",
            errors={"query": {"cursor": [f"expected a decimal position from 0 to {size}"]}},
        )
    return int(cursor)

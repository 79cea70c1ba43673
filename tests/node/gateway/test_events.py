"""The auditor's feed: /events pages prove every leaf against a signed tree head, the
tree heads are linked by consistency proofs, and the feed audits like an export."""

from __future__ import annotations

from typing import Any

from protocol import canonical, merkle
from protocol.audit import audit_lines
from protocol.log import SignedTreeHead, export_line, tree_head_line
from tests.node.gateway.conftest import Gateway, MakeGateway
from tests.node.gateway.helpers import (
    ALICE,
    BLACK,
    BOB,
    deposit,
    make_command,
    post_command,
    problem,
)


def _activity(gateway: Gateway, transfers: int) -> None:
    deposit(gateway.client, ALICE.address, 100 * BLACK)
    for i in range(transfers):
        command = make_command(
            ALICE, "Transfer", to=BOB.address, asset="BLACK", amount=i + 1, memo="m"
        )
        assert post_command(gateway.client, command).status_code == 201


def _head(gateway: Gateway, data: dict[str, Any]) -> SignedTreeHead:
    head = SignedTreeHead.from_json(data)
    head.verify(gateway.operator.address, gateway.chain_id)
    return head


def _hash(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def _read_feed(gateway: Gateway, limit: int) -> tuple[list[dict[str, Any]], SignedTreeHead]:
    """Every leaf through /events, checking each page's proofs; the leaves and last head."""
    leaves: list[dict[str, Any]] = []
    cursor: str | None = None
    for _page in range(1000):
        query = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        response = gateway.client.get("/events", query_string=query)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        head = _head(gateway, page["tree_head"])
        for item in page["items"]:
            leaf_hash = merkle.leaf_hash(canonical.encode(item["leaf"]))
            assert _hash(item["leaf_hash"]) == leaf_hash
            merkle.verify_inclusion_from_hash(
                leaf_hash,
                item["leaf"]["index"],
                head.size,
                [_hash(p) for p in item["proof"]],
                head.root,
            )
            leaves.append(item["leaf"])
        assert len(page["items"]) <= limit
        cursor = page["next_cursor"]
        if cursor is None:
            return leaves, head
    raise AssertionError("the feed did not end")


def test_every_leaf_is_proven_against_the_pages_signed_head(gateway: Gateway) -> None:
    """Paging through /events yields every leaf once, in order, each with an inclusion
    proof that checks against the operator-signed tree head of its page."""
    _activity(gateway, 6)
    leaves, head = _read_feed(gateway, limit=4)
    assert [leaf["index"] for leaf in leaves] == list(range(head.size))
    assert head.size == gateway.log_size() > 8
    assert merkle.root([canonical.encode(leaf) for leaf in leaves]) == head.root


def test_the_feed_audits_like_an_export(gateway: Gateway) -> None:
    """The leaves of /events and its signed tree head, written as an export, pass the
    independent audit."""
    _activity(gateway, 3)
    leaves, head = _read_feed(gateway, limit=1000)
    lines = [export_line(leaf)[0] for leaf in leaves] + [tree_head_line(head)]
    report = audit_lines(iter(lines), workers=0)
    assert report.ok, report.error
    assert report.events == head.size


def test_a_cursor_past_the_end_or_a_limit_out_of_bounds_is_refused(
    make_gateway: MakeGateway,
) -> None:
    """Cursors name positions up to the log size; limit must lie in 1..page_items_max."""
    gateway = make_gateway(page_items_max=5, page_items_default=2)
    size = gateway.log_size()
    problem(gateway.client.get(f"/events?cursor={size + 1}"), 400, "invalid-request")
    problem(gateway.client.get("/events?cursor=abc"), 400, "invalid-request")
    problem(gateway.client.get("/events?limit=6"), 400, "invalid-request")
    problem(gateway.client.get("/events?limit=0"), 400, "invalid-request")
    at_end = gateway.client.get(f"/events?cursor={size}").get_json()
    assert at_end["items"] == [] and at_end["next_cursor"] is None
    _activity(gateway, 3)
    first = gateway.client.get("/events").get_json()
    assert len(first["items"]) == 2 and first["next_cursor"] == "2"


def test_consistency_proof_links_two_signed_heads(gateway: Gateway) -> None:
    """A consistency proof shows an earlier signed head's log is a prefix of a later one."""
    _activity(gateway, 2)
    old = _head(gateway, gateway.client.get("/tree-head").get_json())
    _activity(gateway, 3)
    response = gateway.client.get(f"/tree-head/consistency?from={old.size}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    new = _head(gateway, body["tree_head"])
    assert (body["from"], body["to"]) == (old.size, new.size) and new.size > old.size
    merkle.verify_consistency(
        old.size, new.size, [_hash(p) for p in body["proof"]], old.root, new.root
    )
    problem(
        gateway.client.get(f"/tree-head/consistency?from={new.size + 1}"), 400, "invalid-request"
    )
    problem(gateway.client.get("/tree-head/consistency?from=1&to=0"), 400, "invalid-request")


def test_a_tree_head_is_signed_once_per_size(gateway: Gateway) -> None:
    """Reading the head twice gives the same signed head; a new event gives a new one."""
    first = gateway.client.get("/tree-head").get_json()
    assert gateway.client.get("/tree-head").get_json() == first
    deposit(gateway.client, ALICE.address, 1)
    later = gateway.client.get("/tree-head").get_json()
    assert later["size"] > first["size"] and later["signature"] != first["signature"]
    _head(gateway, later)

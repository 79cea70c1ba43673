"""Helpers shared by the gateway tests: keys, signed commands, problem checks."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from node.gateway.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from protocol.commands import SignedCommand
from tests.protocol.conftest import key_from_int, make_command

ALICE = key_from_int(0xA11CE)
BOB = key_from_int(0xB0B)
CAROL = key_from_int(0xCA401)
BLACK = 10**18

__all__ = ["ALICE", "BLACK", "BOB", "CAROL", "make_command"]


def deposit(client: FlaskClient, account: str, amount: int, asset: str = "BLACK") -> Any:
    """Credit `account` through the dev endpoint; the command result."""
    response = client.post(
        "/dev/deposit", json={"account": account, "asset": asset, "amount": amount}
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def post_command(client: FlaskClient, command: SignedCommand, **extra: Any) -> TestResponse:
    return client.post("/commands", json={**command.to_json(), **extra})


def balance(
    client: FlaskClient, account: str, asset: str = "BLACK", bucket: str = "available"
) -> int:
    response = client.get(f"/accounts/{account}/balances")
    assert response.status_code == 200, response.get_json()
    for item in response.get_json()["balances"]:
        if (item["asset"], item["bucket"]) == (asset, bucket):
            amount = item["amount"]
            assert isinstance(amount, int)
            return amount
    return 0


def problem(response: TestResponse, status: int, slug: str) -> dict[str, Any]:
    """Assert `response` is the RFC 7807 problem `slug` with `status`; return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_MEDIA_TYPE
    body = response.get_json()
    assert isinstance(body, dict)
    assert body["type"] == PROBLEM_BASE + slug, body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body

"""POST /commands and /commands/batch through the in-process gateway: accepted commands
move balances; every kind of refusal is its own problem and leaves the log unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from protocol.commands import KINDS, CommandKind, SignedCommand
from tests.node.gateway.conftest import Gateway, MakeGateway
from tests.node.gateway.helpers import (
    ALICE,
    BLACK,
    BOB,
    CAROL,
    balance,
    deposit,
    make_command,
    post_command,
    problem,
)


def transfer(amount: int, **fields: Any) -> SignedCommand:
    return make_command(
        ALICE, "Transfer", to=BOB.address, asset="BLACK", amount=amount, memo="t", **fields
    )


def test_deposit_then_transfer_moves_balances(client: FlaskClient) -> None:
    """A dev deposit and a signed transfer through HTTP show up in both balances."""
    deposit(client, ALICE.address, 100 * BLACK)
    response = post_command(client, transfer(30 * BLACK))
    assert response.status_code == 201, response.get_json()
    result = response.get_json()
    assert result["kind"] == "Transfer" and result["signer"] == ALICE.address
    assert [leg[3:] for leg in result["legs"]] == [["D", 30 * BLACK], ["C", 30 * BLACK]]
    assert balance(client, ALICE.address) == 70 * BLACK
    assert balance(client, BOB.address) == 30 * BLACK
    items = client.get(f"/accounts/{BOB.address}/balances").get_json()["balances"]
    assert items == [
        {"asset": "BLACK", "bucket": "available", "amount": 30 * BLACK, "display": "30"}
    ]


def test_amounts_beyond_float_precision_stay_exact(client: FlaskClient) -> None:
    """Amounts travel as JSON integers of any size, never rounded through a float."""
    amount = 2**200 + 1
    deposit(client, ALICE.address, amount)
    response = client.get(f"/accounts/{ALICE.address}/balances")
    assert str(amount) in response.get_data(as_text=True)
    assert balance(client, ALICE.address) == amount


def test_a_retry_gets_the_first_answer(gateway: Gateway) -> None:
    """The same command again, or re-signed with a new nonce, answers 200 with the first
    result and records nothing."""
    client = gateway.client
    deposit(client, ALICE.address, 10 * BLACK)
    command = transfer(BLACK, clientId="pay-1")
    first = post_command(client, command)
    assert first.status_code == 201
    size = gateway.log_size()
    again = post_command(client, command)
    resigned = post_command(client, transfer(BLACK, clientId="pay-1"))
    for response in (again, resigned):
        assert response.status_code == 200
        assert response.get_json() == first.get_json()
    assert gateway.log_size() == size
    assert balance(client, ALICE.address) == 9 * BLACK


def _garbled(command: SignedCommand) -> SignedCommand:
    return replace(command, signature=bytes(65))


def _other_signer(command: SignedCommand) -> SignedCommand:
    signed_by_bob = make_command(
        BOB, "Transfer", to=CAROL.address, asset="BLACK", amount=1, memo="m"
    )
    return replace(signed_by_bob, signer=ALICE.address)


Refusal = Callable[[FlaskClient], TestResponse]
REFUSALS: dict[str, tuple[Refusal, int, str]] = {
    "garbled signature": (
        lambda c: post_command(c, _garbled(transfer(1))),
        400,
        "invalid-signature",
    ),
    "signature of another key": (
        lambda c: post_command(c, _other_signer(transfer(1))),
        400,
        "wrong-signer",
    ),
    "no signature": (
        lambda c: c.post(
            "/commands", json={k: v for k, v in transfer(1).to_json().items() if k != "signature"}
        ),
        400,
        "invalid-request",
    ),
    "malformed JSON": (
        lambda c: c.post(
            "/commands", data=b'{"kind": "Transfer",', content_type="application/json"
        ),
        400,
        "malformed-json",
    ),
    "NaN in JSON": (
        lambda c: c.post("/commands", data=b'{"chain_id": NaN}', content_type="application/json"),
        400,
        "malformed-json",
    ),
    "deeply nested JSON": (
        lambda c: c.post(
            "/commands", data=b"[" * 100_000 + b"]" * 100_000, content_type="application/json"
        ),
        400,
        "malformed-json",
    ),
    "unknown envelope field": (
        lambda c: post_command(c, transfer(1), extra=1),
        400,
        "invalid-request",
    ),
    "unknown kind": (
        lambda c: c.post("/commands", json={**transfer(1).to_json(), "kind": "Mint"}),
        400,
        "invalid-request",
    ),
    "unknown message field": (
        lambda c: c.post(
            "/commands",
            json={**transfer(1).to_json(), "message": {**transfer(1).to_json()["message"], "x": 1}},
        ),
        400,
        "invalid-input",
    ),
    "float amount": (
        lambda c: c.post(
            "/commands",
            json={
                **transfer(1).to_json(),
                "message": {**transfer(1).to_json()["message"], "amount": 1.5},
            },
        ),
        400,
        "invalid-input",
    ),
    "another chain": (
        lambda c: post_command(
            c, make_command(ALICE, "Transfer", 1, to=BOB.address, asset="BLACK", amount=1, memo="m")
        ),
        400,
        "wrong-chain-id",
    ),
    "expired": (
        lambda c: post_command(c, transfer(1, expiry=int(time.time()) - 60)),
        400,
        "command-expired",
    ),
    "operator-only kind": (
        lambda c: post_command(
            c,
            make_command(
                ALICE, "Deposit", account=ALICE.address, asset="BLACK", amount=1, chainRef="x"
            ),
        ),
        403,
        "unauthorized",
    ),
    "insufficient funds": (
        lambda c: post_command(c, transfer(10**6 * BLACK)),
        409,
        "insufficient-funds",
    ),
    "body over the limit": (
        lambda c: c.post(
            "/commands", data=b"[" + b" " * (1024 * 1024) + b"]", content_type="application/json"
        ),
        413,
        "payload-too-large",
    ),
    "not JSON": (
        lambda c: c.post("/commands", data=b"kind=Transfer", content_type="text/plain"),
        415,
        "unsupported-media-type",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_command_is_a_problem_and_records_nothing(gateway: Gateway, case: str) -> None:
    """Each kind of bad command gets its own problem type and status, and the log does
    not grow."""
    deposit(gateway.client, ALICE.address, 10 * BLACK)
    size = gateway.log_size()
    send, status, slug = REFUSALS[case]
    body = problem(send(gateway.client), status, slug)
    assert body["instance"] == "/commands"
    assert gateway.log_size() == size
    assert balance(gateway.client, ALICE.address) == 10 * BLACK


def test_problems_carry_the_facts_of_the_refusal(gateway: Gateway) -> None:
    """Refusals carry their structured facts as extension members, amounts as integers."""
    client = gateway.client
    deposit(client, ALICE.address, 10 * BLACK)
    funds = problem(post_command(client, transfer(11 * BLACK)), 409, "insufficient-funds")
    assert (funds["account"], funds["asset"], funds["bucket"]) == (
        ALICE.address,
        "BLACK",
        "available",
    )
    assert (funds["needed"], funds["available"]) == (11 * BLACK, 10 * BLACK)
    chain = problem(
        post_command(
            client,
            make_command(ALICE, "Transfer", 7, to=BOB.address, asset="BLACK", amount=1, memo="m"),
        ),
        400,
        "wrong-chain-id",
    )
    assert (chain["expected"], chain["got"]) == (gateway.chain_id, 7)
    signer = problem(post_command(client, _other_signer(transfer(1))), 400, "wrong-signer")
    assert signer["expected"] == ALICE.address and signer["recovered"] == BOB.address
    unknown = problem(post_command(client, transfer(1), extra=1), 400, "invalid-request")
    assert unknown["errors"] == {"json": {"extra": ["Unknown field."]}}
    field = problem(
        client.post(
            "/commands",
            json={
                **transfer(1).to_json(),
                "message": {**transfer(1).to_json()["message"], "amount": -1},
            },
        ),
        400,
        "invalid-input",
    )
    assert field["field"] == "message.amount"


def test_a_replayed_nonce_is_refused(gateway: Gateway) -> None:
    """A second command with a used nonce (and another client id) is a 409 nonce-replayed."""
    client = gateway.client
    deposit(client, ALICE.address, 10 * BLACK)
    assert post_command(client, transfer(1, nonce=424242)).status_code == 201
    size = gateway.log_size()
    body = problem(post_command(client, transfer(2, nonce=424242)), 409, "nonce-replayed")
    assert (body["signer"], body["nonce"]) == (ALICE.address, 424242)
    assert gateway.log_size() == size


def test_a_reused_client_id_with_another_payload_conflicts(gateway: Gateway) -> None:
    """The same client id for a different transfer is a 409 idempotency-conflict."""
    client = gateway.client
    deposit(client, ALICE.address, 10 * BLACK)
    assert post_command(client, transfer(1, clientId="same")).status_code == 201
    size = gateway.log_size()
    body = problem(post_command(client, transfer(2, clientId="same")), 409, "idempotency-conflict")
    assert (body["signer"], body["client_id"]) == (ALICE.address, "same")
    assert gateway.log_size() == size


def test_a_batch_answers_each_command_in_order(gateway: Gateway) -> None:
    """A batch applies the good commands in one request and reports each refusal in its
    slot; sending it again answers every accepted one with its first result."""
    client = gateway.client
    deposit(client, ALICE.address, 10 * BLACK)
    commands = [transfer(BLACK), transfer(100 * BLACK), transfer(2 * BLACK)]
    body = {"commands": [c.to_json() for c in commands]}
    first = client.post("/commands/batch", json=body)
    assert first.status_code == 200, first.get_json()
    results = first.get_json()["results"]
    assert [r["status"] for r in results] == [201, 409, 201]
    assert results[1]["problem"]["type"].endswith("/insufficient-funds")
    assert balance(client, ALICE.address) == 7 * BLACK
    size = gateway.log_size()
    again = client.post("/commands/batch", json=body).get_json()["results"]
    assert [r["status"] for r in again] == [200, 409, 200]
    assert [r.get("result") for r in again] == [r.get("result") for r in results]
    assert gateway.log_size() == size


def test_a_batch_over_the_limit_is_refused_whole(make_gateway: MakeGateway) -> None:
    """More commands than batch_commands_max, or none, is a 400 and applies nothing."""
    gateway = make_gateway(batch_commands_max=2)
    deposit(gateway.client, ALICE.address, 10 * BLACK)
    size = gateway.log_size()
    three = {"commands": [transfer(1).to_json() for _ in range(3)]}
    body = problem(gateway.client.post("/commands/batch", json=three), 400, "invalid-request")
    assert "commands" in json.dumps(body["errors"])
    problem(gateway.client.post("/commands/batch", json={"commands": []}), 400, "invalid-request")
    assert gateway.log_size() == size


def test_dev_endpoints_exist_only_in_dev_mode(make_gateway: MakeGateway) -> None:
    """Without dev mode POST /dev/deposit is an unknown route (404 problem)."""
    gateway = make_gateway(dev=False)
    body = {"account": ALICE.address, "asset": "BLACK", "amount": 1}
    problem(gateway.client.post("/dev/deposit", json=body), 404, "not-found")
    assert gateway.log_size() == 1


_SAMPLES: dict[str, Any] = {
    "address": BOB.address,
    "string": "sample",
    "uint256": 1,
    "uint64": 1,
    "bool": False,
    "bytes32": "0x" + "00" * 32,
    "bytes": "0x",
    "uint32[]": [],
    "Payout[]": [{"account": BOB.address, "amount": 1}],
}
# Fields whose strings the protocol reads (a new kind may need an entry here).
_FIELD_SAMPLES: dict[str, Any] = {
    "asset": "BLACK",
    "job": "job-1",
    "lease": "lease-1",
    "commitment": "commitment-1",
    "dispute": "dispute-1",
    "target": "target-1",
    "status": "paused",
}


def _sample_message(kind: CommandKind) -> dict[str, Any]:
    return {name: _FIELD_SAMPLES.get(name, _SAMPLES[type_]) for name, type_ in kind.fields}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_command_kind_reaches_the_protocol(gateway: Gateway, kind: str) -> None:
    """Each kind the protocol defines passes the envelope schema and gets the protocol's
    own answer (accepted or a 4xx problem), never a schema refusal or a 500."""
    deposit(gateway.client, ALICE.address, 10 * BLACK)
    signer = gateway.operator if KINDS[kind].operator_only else ALICE
    response = post_command(
        gateway.client, make_command(signer, kind, **_sample_message(KINDS[kind]))
    )
    assert response.status_code < 500, response.get_json()
    if response.status_code >= 400:
        assert not response.get_json()["type"].endswith("/invalid-request"), response.get_json()


def test_a_commands_context_is_checked(gateway: Gateway) -> None:
    """The unsigned `context` is validated: an unknown member is a schema refusal and a
    job spec that does not parse is the protocol's invalid-input; nothing is recorded."""
    size = gateway.log_size()
    command = make_command(ALICE, "SubmitJob", specHash="0x" + "00" * 32)
    problem(post_command(gateway.client, command, context={"other": 1}), 400, "invalid-request")
    problem(post_command(gateway.client, command, context={"spec": {}}), 400, "invalid-input")
    assert gateway.log_size() == size

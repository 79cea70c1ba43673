"""The compute protocol end to end over HTTP, against a real gunicorn gateway (two workers)
on 127.0.0.1: register, fund, submit, lease, commit, verify, settle, and the audit of the
exported log passes; bad requests get problems and leave the log as it was."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from node.client import GatewayClient, GatewayError
from protocol.assets import Asset
from protocol.audit import audit_lines
from protocol.commands import SignedCommand, sign_command
from protocol.compute import ComputeParams
from protocol.fees import settle_segment
from protocol.keys import PrivateKey
from tests.gateway_server import RunningGateway, run_gateway
from tests.protocol.compute_world import BLACK, small_spec

_counter = itertools.count(1)


def key(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


DEVELOPER, PROVIDER, VERIFIER = key(0xDE7), key(0x9001), key(0x7001)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("compute-gw"), workers=2) as running:
        yield running


def signed(gw: RunningGateway, who: PrivateKey, kind: str, **fields: Any) -> SignedCommand:
    number = next(_counter)
    fields.setdefault("clientId", f"e2e-{number}-{time.time_ns()}")
    fields.setdefault("nonce", time.time_ns() + number)
    fields.setdefault("expiry", int(time.time()) + 600)
    return sign_command(who, kind, gw.chain_id, fields)


def post(
    client: GatewayClient, path: str, command: SignedCommand, context: dict[str, Any] | None = None
) -> Any:
    body = command.to_json()
    if context is not None:
        body["context"] = context
    return client.post_json(path, body)


def balances(client: GatewayClient, who: str) -> dict[str, int]:
    reply = client.get_json(f"/accounts/{who}/balances")
    return {f"{b['asset']}/{b['bucket']}": b["amount"] for b in reply["balances"]}


def log_size(client: GatewayClient) -> int:
    return int(client.get_json("/tree-head")["size"])


def test_job_lifecycle_over_http_settles_exactly_and_the_log_audits(
    gateway: RunningGateway,
) -> None:
    """A job trained and verified through the HTTP API pays provider, verifier and platform
    exactly as the fee schedule says, refunds the rest, and its exported log audits clean."""
    client = gateway.client()
    for who in (DEVELOPER, PROVIDER, VERIFIER):
        client.post_json(
            "/dev/deposit", {"account": who.address, "asset": "BLACK", "amount": 100 * BLACK}
        )
    post(
        client,
        "/providers",
        signed(
            gateway,
            PROVIDER,
            "RegisterProvider",
            device="cpu",
            gpus=1,
            memoryMb=16_000,
            benchmarkGflops=50,
            priceBlack=5 * 10**13,
            priceUsd=50,
            stake=20 * BLACK,
        ),
    )
    post(client, "/verifiers", signed(gateway, VERIFIER, "RegisterVerifier", stake=20 * BLACK))
    spec = small_spec()
    submitted = post(
        client,
        "/jobs",
        signed(gateway, DEVELOPER, "SubmitJob", specHash="0x" + spec.digest().hex()),
        {"spec": spec.to_json()},
    )
    job = submitted["outcome"]["job"]
    assert client.get_json(f"/jobs/{job}")["escrow"] == spec.budget_max()

    for _segment in range(len(spec.segments())):
        lease = post(client, "/leases", signed(gateway, PROVIDER, "RequestLease", job=job))[
            "outcome"
        ]
        assert lease["verifier"] == VERIFIER.address
        post(
            client,
            f"/leases/{lease['lease']}/heartbeat",
            signed(gateway, PROVIDER, "Heartbeat", lease=lease["lease"]),
        )
        steps = lease["end_step"] - lease["start_step"]
        commitment = post(
            client,
            f"/leases/{lease['lease']}/commitment",
            signed(
                gateway,
                PROVIDER,
                "Commit",
                lease=lease["lease"],
                startCheckpoint=lease["start_checkpoint"],
                endCheckpoint="0x" + f"{lease['end_step']:064x}",
                root="0x" + "cd" * 32,
                steps=steps,
                lossTrace="0x" + "3f800000" * steps,
            ),
        )["outcome"]["commitment"]
        post(
            client,
            f"/commitments/{commitment}/openings",
            signed(
                gateway, PROVIDER, "OpenSamples", commitment=commitment, openings="0x" + "0e" * 32
            ),
        )
        tasks = client.get_json("/tasks", {"verifier": VERIFIER.address})
        assert [t["id"] for t in tasks["verdicts"]] == [commitment]
        detail = client.get_json(f"/commitments/{commitment}")
        post(
            client,
            f"/commitments/{commitment}/verdict",
            signed(
                gateway,
                VERIFIER,
                "PostVerdict",
                commitment=commitment,
                accepted=True,
                samples=detail["sample_indices"],
                failedStep=0,
                reason="",
            ),
        )

    final = client.get_json(f"/jobs/{job}")
    assert final["status"] == "completed" and final["escrow"] == 0
    split = settle_segment(2 * 5 * 10**13, Asset.BLACK, ComputeParams().fees)
    segments = len(spec.segments())
    assert (
        balances(client, PROVIDER.address)["BLACK/available"]
        == 80 * BLACK + segments * split.provider
    )
    assert (
        balances(client, VERIFIER.address)["BLACK/available"]
        == 80 * BLACK + segments * split.verifier
    )
    assert balances(client, "treasury")["BLACK/treasury"] == segments * split.platform
    assert (
        balances(client, DEVELOPER.address)["BLACK/available"]
        == 100 * BLACK - segments * split.total
    )
    listed = client.get_json("/jobs", {"developer": DEVELOPER.address})
    assert [j["id"] for j in listed["items"]] == [job]

    lines = _export(client)
    report = audit_lines(lines, workers=0, require_tree_head=False)
    assert report.ok, report.error
    assert report.events == log_size(client)


def _export(client: GatewayClient) -> list[bytes]:
    from protocol.log import export_line

    lines: list[bytes] = []
    cursor: str | None = "0"
    while cursor is not None:
        page = client.get_json("/events", {"cursor": cursor, "limit": 500})
        lines += [export_line(item["leaf"])[0] for item in page["items"]]
        cursor = page["next_cursor"]
    return lines


NO_JOB = "00000000-0000-0000-0000-000000000000"


def _forged(gw: RunningGateway) -> dict[str, Any]:
    body = signed(gw, PROVIDER, "RequestLease", job=NO_JOB).to_json()
    body["signature"] = "0x" + "11" * 65
    return body


def _other_signer(gw: RunningGateway) -> dict[str, Any]:
    body = signed(gw, PROVIDER, "RequestLease", job=NO_JOB).to_json()
    body["message"]["job"] = "11111111-1111-1111-1111-111111111111"
    return body


def _unknown_field(gw: RunningGateway) -> dict[str, Any]:
    body = signed(gw, PROVIDER, "RequestLease", job=NO_JOB).to_json()
    body["extra_field"] = 1
    return body


@pytest.mark.parametrize(
    "build, status, problem",
    [
        (_forged, 400, "invalid-signature"),
        (_other_signer, 400, "wrong-signer"),
        (lambda gw: signed(gw, PROVIDER, "RequestLease", job=NO_JOB).to_json(), 404, "not-found"),
        (
            lambda gw: signed(gw, PROVIDER, "Heartbeat", lease=NO_JOB).to_json(),
            400,
            "invalid-input",
        ),
        (_unknown_field, 400, "invalid-request"),
    ],
)
def test_bad_lease_requests_are_problems_and_change_nothing(
    gateway: RunningGateway, build: Any, status: int, problem: str
) -> None:
    """Forged, tampered, mis-addressed, wrong-kind and malformed lease requests each get
    their 4xx problem body, and the event log keeps its size."""
    client = gateway.client()
    body = build(gateway)
    before = log_size(client)
    with pytest.raises(GatewayError) as caught:
        client.post_json("/leases", body)
    assert (caught.value.status, caught.value.problem["type"].rsplit("/", 1)[1]) == (
        status,
        problem,
    )
    assert log_size(client) == before


def test_malformed_json_to_a_compute_endpoint_is_a_problem(gateway: RunningGateway) -> None:
    """A body that is not JSON gets a 400 problem and records nothing."""
    client = gateway.client()
    before = log_size(client)
    reply = client.request("POST", "/jobs", b"{not json", {"Content-Type": "application/json"})
    assert reply.status == 400
    assert json.loads(reply.body)["status"] == 400
    assert log_size(client) == before


def test_submit_with_a_spec_that_does_not_match_its_hash_is_refused(
    gateway: RunningGateway,
) -> None:
    """A SubmitJob whose signed specHash is not the digest of the spec sent is refused
    (400 invalid-input), and no money moves."""
    client = gateway.client()
    client.post_json(
        "/dev/deposit", {"account": DEVELOPER.address, "asset": "BLACK", "amount": BLACK}
    )
    spec, other = small_spec(), small_spec(total_steps=6)
    before = log_size(client)
    with pytest.raises(GatewayError) as caught:
        post(
            client,
            "/jobs",
            signed(gateway, DEVELOPER, "SubmitJob", specHash="0x" + spec.digest().hex()),
            {"spec": other.to_json()},
        )
    assert caught.value.status == 400
    assert log_size(client) == before


def test_openapi_documents_the_compute_resources(gateway: RunningGateway) -> None:
    """The generated OpenAPI document lists every compute route."""
    paths = gateway.client().get_json("/openapi.json")["paths"]
    for path in (
        "/jobs",
        "/jobs/{job}",
        "/leases",
        "/leases/{lease}/commitment",
        "/commitments/{commitment}/verdict",
        "/disputes/{dispute}/ruling",
        "/tasks",
        "/providers",
    ):
        assert path in paths, path


def _refused(client: GatewayClient, path: str, body: dict[str, Any]) -> tuple[int, str]:
    before = log_size(client)
    with pytest.raises(GatewayError) as caught:
        client.post_json(path, body)
    assert log_size(client) == before
    return caught.value.status, caught.value.problem["type"].rsplit("/", 1)[1]


def test_compute_refusals_over_http_are_problems_that_change_nothing(
    gateway: RunningGateway,
) -> None:
    """Insufficient funds for a budget, a replayed nonce, an illegal transition and a
    path id that is not the signed one each get their 4xx problem and record nothing."""
    client = gateway.client()
    broke = key(0xB40CE)
    spec = small_spec()
    submit = signed(gateway, broke, "SubmitJob", specHash="0x" + spec.digest().hex())
    body = {**submit.to_json(), "context": {"spec": spec.to_json()}}
    assert _refused(client, "/jobs", body) == (409, "insufficient-funds")

    client.post_json("/dev/deposit", {"account": broke.address, "asset": "BLACK", "amount": BLACK})
    accepted = post(client, "/jobs", submit, {"spec": spec.to_json()})
    job = accepted["outcome"]["job"]
    cancel = signed(gateway, broke, "CancelJob", job=job)
    post(client, f"/jobs/{job}/cancel", cancel)

    replay = signed(
        gateway,
        broke,
        "SubmitJob",
        specHash=submit.message["specHash"],
        nonce=submit.message["nonce"],
    )
    replay_body = {**replay.to_json(), "context": {"spec": spec.to_json()}}
    assert _refused(client, "/jobs", replay_body) == (409, "nonce-replayed")
    again = signed(gateway, broke, "CancelJob", job=job)
    assert _refused(client, f"/jobs/{job}/cancel", again.to_json()) == (409, "invalid-transition")
    other = signed(gateway, broke, "CancelJob", job=job)
    assert _refused(client, f"/jobs/{NO_JOB}/cancel", other.to_json()) == (400, "invalid-input")
    stranger = signed(gateway, key(0x5757), "CancelJob", job=job)
    assert _refused(client, f"/jobs/{job}/cancel", stranger.to_json()) == (403, "unauthorized")

"""The gateway under gunicorn with two workers, over real sockets, through GatewayClient."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node.cli import main
from node.client import GatewayClient, GatewayError
from protocol import canonical, merkle
from protocol.log import SignedTreeHead
from tests.gateway_server import RunningGateway
from tests.node.gateway.helpers import ALICE, BLACK, BOB, CAROL, make_command

batches_max = 150
connections_per_batch = 12
# A worker still booting (a loaded CI machine) takes no connections: wait for it, bounded.
batch_pause_seconds = 0.2


def _health_and_connection(server: RunningGateway) -> list[tuple[int, http.client.HTTPConnection]]:
    """Several connections opened at once, each with the pid of the worker serving it."""
    host, port = server.base_url.removeprefix("http://").split(":")
    connections = [
        http.client.HTTPConnection(host, int(port), timeout=10)
        for _ in range(connections_per_batch)
    ]
    for connection in connections:
        connection.connect()
    served = []
    for connection in connections:
        connection.request("GET", "/health")
        served.append((json.loads(connection.getresponse().read())["worker"], connection))
    return served


def _balances(connection: http.client.HTTPConnection, account: str) -> dict[str, int]:
    connection.request("GET", f"/accounts/{account}/balances")
    body = json.loads(connection.getresponse().read())
    return {f"{b['asset']}/{b['bucket']}": b["amount"] for b in body["balances"]}


def test_a_write_through_one_worker_is_read_through_the_other(server: RunningGateway) -> None:
    """Commands written through a connection to one worker are read back, exactly,
    through a connection the other worker serves."""
    with server.client() as writer:
        writer_pid = writer.get_json("/health")["worker"]
        writer.post_json(
            "/dev/deposit", {"account": ALICE.address, "asset": "USD", "amount": 50 * 10**6}
        )
        transfer = make_command(
            ALICE, "Transfer", to=CAROL.address, asset="USD", amount=7 * 10**6, memo="m"
        )
        reply = writer.post_json_reply("/commands", transfer.to_json())
        assert reply.status == 201
        assert writer.get_json("/health")["worker"] == writer_pid  # one kept-alive connection
    for _batch in range(batches_max):
        served = _health_and_connection(server)
        try:
            other = [c for pid, c in served if pid != writer_pid]
            if other:
                assert _balances(other[0], CAROL.address) == {"USD/available": 7 * 10**6}
                assert _balances(other[0], ALICE.address) == {"USD/available": 43 * 10**6}
                return
        finally:
            for _pid, connection in served:
                connection.close()
        time.sleep(batch_pause_seconds)
    pytest.fail(
        f"gunicorn gave all {batches_max * connections_per_batch} connections to one worker"
    )


def test_connections_are_kept_alive(server: RunningGateway) -> None:
    """One connection carries many requests (gthread workers keep it open)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/health")
        connection.getresponse().read()
        sock = connection.sock
        for _ in range(10):
            connection.request("GET", "/tree-head")
            response = connection.getresponse()
            response.read()
            assert response.status == 200 and not response.will_close
        assert connection.sock is sock and sock is not None
    finally:
        connection.close()


def test_refusals_over_http_are_problems_and_change_nothing(server: RunningGateway) -> None:
    """Through the real server, bad requests raise GatewayError with the problem body
    and leave the log as it was."""
    with server.client() as client:
        size = client.get_json("/tree-head")["size"]
        wrong_chain = make_command(
            BOB, "Transfer", 1, to=ALICE.address, asset="BLACK", amount=1, memo="m"
        )
        with pytest.raises(GatewayError) as refused:
            client.submit(wrong_chain)
        assert refused.value.status == 400 and refused.value.type.endswith("/wrong-chain-id")
        assert refused.value.problem["expected"] == server.chain_id
        malformed = client.request(
            "POST", "/commands", b"{nope", {"Content-Type": "application/json"}
        )
        assert (
            malformed.status == 400
            and malformed.headers["content-type"] == "application/problem+json"
        )
        assert malformed.json()["type"].endswith("/malformed-json")
        with pytest.raises(GatewayError) as missing:
            client.get_json("/jobs/of/nobody/at/all")
        assert missing.value.status == 404
        funds = make_command(
            BOB, "Transfer", to=ALICE.address, asset="BLACK", amount=10**30, memo="m"
        )
        with pytest.raises(GatewayError) as poor:
            client.submit(funds)
        assert poor.value.status == 409 and poor.value.problem["needed"] == 10**30
        assert client.get_json("/tree-head")["size"] == size


def test_blobs_stream_through_the_real_server(server: RunningGateway, tmp_path: Path) -> None:
    """A file is uploaded from disk and downloaded to disk in chunks, its digest checked
    both ways; a wrong digest is refused."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = "0x" + hashlib.sha256(data).hexdigest()
    source = tmp_path / "blob.bin"
    source.write_bytes(data)
    with server.client() as client:
        assert client.blob_size(digest) is None
        assert client.put_blob(digest, source) == {"digest": digest, "size": len(data)}
        assert client.put_blob(digest, data)["size"] == len(data)
        assert client.blob_size(digest) == len(data)
        target = tmp_path / "copy.bin"
        assert client.download_blob(digest, target) == len(data)
        assert target.read_bytes() == data
        assert client.get_blob(digest) == data
        with pytest.raises(GatewayError) as refused:
            client.put_blob("0x" + "00" * 32, b"not that")
        assert refused.value.type.endswith("/digest-mismatch")


def test_the_event_feed_verifies_over_http(server: RunningGateway) -> None:
    """Pages of /events read through the client verify against the signed head."""
    with server.client() as client:
        client.post_json(
            "/dev/deposit", {"account": BOB.address, "asset": "BLACK", "amount": BLACK}
        )
        page: dict[str, Any] = client.get_json("/events", {"limit": 1000})
        head = SignedTreeHead.from_json(page["tree_head"])
        head.verify(server.operator.address, server.chain_id)
        assert len(page["items"]) == head.size and page["next_cursor"] is None
        for item in page["items"]:
            leaf_hash = merkle.leaf_hash(canonical.encode(item["leaf"]))
            proof = [bytes.fromhex(p[2:]) for p in item["proof"]]
            merkle.verify_inclusion_from_hash(
                leaf_hash, item["leaf"]["index"], head.size, proof, head.root
            )


def test_the_openapi_command_prints_the_served_document(server: RunningGateway) -> None:
    """`blacktail gateway openapi --dev` prints the document the dev server serves."""
    result = CliRunner().invoke(main, ["gateway", "openapi", "--dev"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with GatewayClient(server.base_url) as client:
        assert json.loads(result.output) == client.get_json("/openapi.json")


def test_an_oversized_body_gets_its_413_over_a_real_socket(server: RunningGateway) -> None:
    """A JSON body far over the limit is answered 413, and the client reads that answer
    even though the server stopped reading the body; the log is unchanged."""
    with server.client() as client:
        size = client.get_json("/tree-head")["size"]
        body = b"[" + b" " * (8 * 1024 * 1024) + b"]"
        reply = client.request("POST", "/commands", body, {"Content-Type": "application/json"})
        assert reply.status == 413
        assert reply.json()["type"].endswith("/payload-too-large")
        assert reply.json()["bytes_max"] == 1024 * 1024
        assert client.get_json("/tree-head")["size"] == size

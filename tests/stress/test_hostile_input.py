"""Hostile input over HTTP, against a real gunicorn gateway: blob uploads that are too big,
misnamed, cut short, pickles posing as safetensors, safetensors headers that lie; and
signatures that are malleable, for another chain, or lifted from another EIP-712 type or
domain. Each is refused with its problem, and nothing is stored or recorded (issue 8,
§3; the API fuzzing is in test_fuzz_api.py)."""

from __future__ import annotations

import hashlib
import json
import pickle
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from protocol.commands import SignedCommand, parse_kind, typed_data
from protocol.eip712 import hash_typed_data, recover_typed_data_signer
from protocol.keys import SECP256K1_ORDER, PrivateKey
from protocol.log import tree_head_typed_data
from tests.gateway_server import RunningGateway, run_gateway
from tests.stress.commands import Answer, send, signed

OCTET = "application/octet-stream"
SAFETENSORS = "application/vnd.safetensors"
PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://blacktail.dev/problems/"
blob_bytes_max = 64 * 1024
socket_seconds = 10.0
ALICE = PrivateKey.from_bytes((0xA11CE5).to_bytes(32, "big"))
BOB = PrivateKey.from_bytes((0xB0B5).to_bytes(32, "big"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gunicorn gateway (two workers, dev mode) whose blob limit is 64 KiB."""
    with run_gateway(
        tmp_path_factory.mktemp("hostile"),
        env={"BLACKTAIL_BLOB_BYTES_MAX": str(blob_bytes_max)},
    ) as running:
        with running.client() as client:
            client.post_json(
                "/dev/deposit", {"account": ALICE.address, "asset": "BLACK", "amount": 10**18}
            )
        yield running


def check_problem(
    status: int, headers: dict[str, str], body: bytes, expected: int, slug: str
) -> Any:
    """Assert an answer is the RFC 7807 problem `slug` with status `expected`."""
    assert status == expected, body[:500]
    assert headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    problem = json.loads(body)
    assert problem["type"] == (slug if slug == "about:blank" else PROBLEM_BASE + slug), problem
    assert problem["status"] == expected and problem["title"], problem
    return problem


def log_size(gateway: RunningGateway) -> int:
    with gateway.client() as client:
        return int(client.get_json("/tree-head")["size"])


def stored_files(gateway: RunningGateway) -> set[Path]:
    """Every file under the blob directory, temporaries included."""
    return {p for p in (gateway.data_dir / "blobs").rglob("*") if p.is_file()}


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(
    gateway: RunningGateway, name: str, data: bytes, media_type: str
) -> tuple[int, dict[str, str], bytes]:
    with gateway.client() as client:
        reply = client.request("PUT", f"/blobs/{name}", data, {"Content-Type": media_type})
    return reply.status, reply.headers, reply.body


def raw_exchange(gateway: RunningGateway, head: bytes, body: bytes) -> bytes:
    """Send `head` and `body` on a socket of its own, close the sending side, and read
    whatever the server answers until it closes."""
    port = int(gateway.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=socket_seconds) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def parse_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-case names) and body of a raw HTTP/1.1 answer that
    ends where the server closed the connection."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), headers, body


def checkpoint() -> bytes:
    return save(
        {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(4, np.float32)},
        metadata={"step": "7"},
    )


def with_header(data: bytes, edit: Any) -> bytes:
    """`data` (a safetensors file) with its JSON header replaced by `edit(header)`."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    encoded = json.dumps(edit(header)).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data[8 + length :]


class Plant:
    """Unpickling this runs `open(marker, "w")`: proof, if the file appears, that the
    gateway loaded a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def lying_headers() -> dict[str, bytes]:
    good = checkpoint()

    def shape(header: dict[str, Any]) -> dict[str, Any]:
        header["w"]["shape"] = [4, 4]
        return header

    def past_the_end(header: dict[str, Any]) -> dict[str, Any]:
        start, end = header["w"]["data_offsets"]
        header["w"]["data_offsets"] = [start, end + 4096]
        return header

    def overlap(header: dict[str, Any]) -> dict[str, Any]:
        start = header["w"]["data_offsets"][0]
        header["b"]["data_offsets"] = [start, start + 16]
        return header

    def dtype(header: dict[str, Any]) -> dict[str, Any]:
        header["w"]["dtype"] = "F64"
        return header

    huge_length = struct.pack("<Q", 2**62) + good[8:]
    return {
        "shape larger than its bytes": with_header(good, shape),
        "offsets past the end": with_header(good, past_the_end),
        "overlapping tensors": with_header(good, overlap),
        "dtype wider than its bytes": with_header(good, dtype),
        "header length of 2^62": huge_length,
        "truncated file": good[:-7],
    }


def test_bad_blob_uploads_are_refused_and_nothing_is_stored(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """An upload over the limit (sized or chunked), a body under another digest, a
    pickle (whose unpickling would plant a file) sent as safetensors, and safetensors
    whose headers lie about shapes, offsets, dtypes or length are each refused with
    their problem; no blob or temporary file is left, the pickle is never loaded, and a
    well-formed checkpoint still goes in."""
    before = stored_files(gateway)
    too_big = b"x" * (blob_bytes_max + 1)
    check_problem(*put(gateway, digest_of(too_big), too_big, OCTET), 413, "payload-too-large")

    chunked = raw_exchange(
        gateway,
        (
            f"PUT /blobs/{digest_of(too_big)} HTTP/1.1\r\nHost: gateway\r\nContent-Type: {OCTET}"
            "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode(),
        b"".join(b"%x\r\n%s\r\n" % (4096, too_big[i : i + 4096]) for i in range(0, 65536, 4096))
        + b"%x\r\n%s\r\n0\r\n\r\n" % (1, b"x"),
    )
    check_problem(*parse_answer(chunked), 413, "payload-too-large")

    real, claimed = b"the bytes sent", b"the bytes named"
    problem = check_problem(*put(gateway, digest_of(claimed), real, OCTET), 400, "digest-mismatch")
    assert (problem["expected"], problem["actual"]) == (digest_of(claimed), digest_of(real))

    marker = tmp_path / "unpickled"
    disguised = pickle.dumps(Plant(marker), protocol=4)
    check_problem(*put(gateway, digest_of(disguised), disguised, SAFETENSORS), 400, "invalid-blob")
    for name, data in lying_headers().items():
        status, headers, body = put(gateway, digest_of(data), data, SAFETENSORS)
        problem = check_problem(status, headers, body, 400, "invalid-blob")
        assert problem["media_type"] == SAFETENSORS, name
    assert not marker.exists(), "the gateway unpickled an upload"
    with gateway.client() as client:
        for data in (too_big, real, claimed, disguised, *lying_headers().values()):
            assert client.blob_size(digest_of(data)) is None
    assert stored_files(gateway) == before

    good = checkpoint()
    status, _, body = put(gateway, digest_of(good), good, SAFETENSORS)
    assert status == 201, body
    with gateway.client() as client:
        assert client.get_blob(digest_of(good)) == good


def test_an_upload_cut_short_is_refused_and_nothing_is_stored(gateway: RunningGateway) -> None:
    """A body that ends before its Content-Length (the client gave up half way) is a 400
    bad-request problem, whether its name is the digest of the whole or of the part that
    arrived, and leaves neither a blob nor a temporary file."""
    before = stored_files(gateway)
    whole = bytes(range(256)) * 64
    part = whole[: len(whole) // 2]
    for name in (digest_of(whole), digest_of(part)):
        answer = raw_exchange(
            gateway,
            f"PUT /blobs/{name} HTTP/1.1\r\nHost: gateway\r\nContent-Type: {OCTET}\r\n"
            f"Content-Length: {len(whole)}\r\nConnection: close\r\n\r\n".encode(),
            part,
        )
        problem = check_problem(*parse_answer(answer), 400, "bad-request")
        assert (
            problem["detail"]
            == f"the body ended after {len(part)} of the {len(whole)} bytes it announced"
        )
        with gateway.client() as client:
            assert client.blob_size(name) is None
    assert stored_files(gateway) == before


def test_requests_the_http_server_cannot_parse_get_problems_too(gateway: RunningGateway) -> None:
    """A request line over gunicorn's limit (414), headers over it (431) and a broken
    chunked body (400), which gunicorn answers before the application sees them, are
    answered with problems like every other error, and record nothing."""
    before = log_size(gateway)
    long_line = raw_exchange(
        gateway, b"GET /jobs?cursor=" + b"9" * 9000 + b" HTTP/1.1\r\n\r\n", b""
    )
    check_problem(*parse_answer(long_line), 414, "about:blank")
    many_headers = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"y" * 64) for n in range(200))
    big_head = raw_exchange(
        gateway, b"GET /health HTTP/1.1\r\nHost: g\r\n" + many_headers + b"\r\n", b""
    )
    check_problem(*parse_answer(big_head), 431, "about:blank")
    bad_chunks = raw_exchange(
        gateway,
        b"POST /commands HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"zz\r\n{}\r\n0\r\n\r\n",
    )
    check_problem(*parse_answer(bad_chunks), 400, "bad-request")
    assert log_size(gateway) == before


# -- signatures ---------------------------------------------------------------------------


def transfer(gateway: RunningGateway, amount: int = 1, **fields: Any) -> SignedCommand:
    return signed(
        ALICE,
        "Transfer",
        gateway.chain_id,
        to=BOB.address,
        asset="BLACK",
        amount=amount,
        memo="",
        **fields,
    )


def high_s_twin(command: SignedCommand) -> SignedCommand:
    """The other valid signature of the same digest: (r, n - s) with v flipped."""
    r, s, v = (
        command.signature[:32],
        int.from_bytes(command.signature[32:64], "big"),
        command.signature[64],
    )
    twin = r + (SECP256K1_ORDER - s).to_bytes(32, "big") + bytes([55 - v])
    return SignedCommand(command.kind, command.chain_id, command.signer, command.message, twin)


def resign_digest(command: SignedCommand, key: PrivateKey, digest: bytes) -> SignedCommand:
    return SignedCommand(
        command.kind, command.chain_id, command.signer, command.message, key.sign_digest(digest)
    )


def refused(gateway: RunningGateway, command: SignedCommand, status: int, slug: str) -> Answer:
    """Send `command` to POST /commands; assert it is the problem `slug` and that the log
    did not move."""
    before = log_size(gateway)
    answer = send(gateway.base_url, "/commands", command)
    assert (answer.status, answer.slug) == (status, slug), answer.body
    assert answer.body["title"] and answer.body["status"] == status
    assert log_size(gateway) == before
    return answer


def test_malleable_signatures_are_refused_before_and_after_the_original_is_accepted(
    gateway: RunningGateway,
) -> None:
    """The high-s twin of a valid signature is refused as invalid (never taken for the
    same command, never as a retry), while the low-s original is accepted."""
    command = transfer(gateway)
    twin = high_s_twin(command)
    refused(gateway, twin, 400, "invalid-signature")
    assert send(gateway.base_url, "/commands", command).status == 201
    refused(gateway, twin, 400, "invalid-signature")
    assert send(gateway.base_url, "/commands", command).status == 200


def test_signatures_for_another_chain_type_or_domain_are_refused(gateway: RunningGateway) -> None:
    """A command signed for another chain id (declared as such, or passed off as this
    chain's), a Stake signature replayed as the Unstake with the same fields, the same
    Transfer signed under another EIP-712 domain, and the operator's own tree-head
    signature presented as an operator Deposit are all refused, recording nothing."""
    other_chain = signed(
        ALICE, "Transfer", gateway.chain_id + 1, to=BOB.address, asset="BLACK", amount=1, memo=""
    )
    problem = refused(gateway, other_chain, 400, "wrong-chain-id").body
    assert (problem["expected"], problem["got"]) == (gateway.chain_id, gateway.chain_id + 1)
    passed_off = SignedCommand(
        other_chain.kind,
        gateway.chain_id,
        ALICE.address,
        other_chain.message,
        other_chain.signature,
    )
    refused(gateway, passed_off, 400, "wrong-signer")

    stake = signed(ALICE, "Stake", gateway.chain_id, asset="BLACK", amount=1)
    as_unstake = SignedCommand(
        "Unstake", stake.chain_id, stake.signer, stake.message, stake.signature
    )
    refused(gateway, as_unstake, 400, "wrong-signer")

    command = transfer(gateway)
    for domain in (
        {"name": "OtherApp", "version": "1", "chainId": gateway.chain_id},
        {"name": "BlackTail", "version": "2", "chainId": gateway.chain_id},
    ):
        document = typed_data_with_domain(command, domain)
        refused(
            gateway, resign_digest(command, ALICE, hash_typed_data(document)), 400, "wrong-signer"
        )

    with gateway.client() as client:
        head = client.get_json("/tree-head")
    deposit = signed(
        gateway.operator,
        "Deposit",
        gateway.chain_id,
        account=ALICE.address,
        asset="BLACK",
        amount=10**18,
        chainRef="replayed",
    )
    lifted = SignedCommand(
        deposit.kind,
        deposit.chain_id,
        deposit.signer,
        deposit.message,
        bytes.fromhex(head["signature"][2:]),
    )
    signed_head = tree_head_typed_data(
        gateway.chain_id, head["size"], bytes.fromhex(head["root"][2:]), head["timestamp"]
    )
    # A genuine operator signature, over the tree head it was made for.
    assert recover_typed_data_signer(signed_head, lifted.signature) == gateway.operator.address
    refused(gateway, lifted, 400, "wrong-signer")
    # The control: each command, signed properly, is accepted.
    assert send(gateway.base_url, "/commands", command).status == 201
    assert send(gateway.base_url, "/commands", stake).status == 201


def typed_data_with_domain(command: SignedCommand, domain: dict[str, Any]) -> dict[str, Any]:
    document = typed_data(parse_kind(command.kind), command.chain_id, command.message)
    document["domain"] = domain
    return document

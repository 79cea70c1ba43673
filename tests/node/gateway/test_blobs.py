"""PUT/GET/HEAD /blobs/<sha256>: a blob is stored only when it is what it claims to be."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save
from werkzeug.test import EnvironBuilder, run_wsgi_app

from node.blobs import MediaType
from tests.node.gateway.conftest import Gateway, MakeGateway
from tests.node.gateway.helpers import problem

SAFETENSORS = MediaType.SAFETENSORS.value
OCTET = MediaType.OCTET_STREAM.value


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored_files(gateway: Gateway) -> list[Path]:
    """Every file under the blob directory, temporary ones included."""
    return sorted(p for p in gateway.services.config.blob_dir.rglob("*") if p.is_file())


def _checkpoint() -> bytes:
    return save(
        {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(4, np.float32)},
        metadata={"step": "7"},
    )


def test_a_blob_round_trips_and_a_second_put_changes_nothing(gateway: Gateway) -> None:
    """PUT stores a blob under its digest (201, then 200 for the same bytes); GET and HEAD
    give its bytes, size and digest ETag; it lies at root/ab/cdef..."""
    data = b"checkpoint bytes" * 1000
    digest = _digest(data)
    first = gateway.client.put(f"/blobs/{digest}", data=data, content_type=OCTET)
    assert first.status_code == 201, first.get_json()
    assert first.get_json() == {"digest": "0x" + digest, "size": len(data)}
    assert first.headers["Location"] == f"/blobs/0x{digest}"
    again = gateway.client.put(f"/blobs/0x{digest.upper()}", data=data, content_type=OCTET)
    assert again.status_code == 200 and again.get_json() == first.get_json()
    stored = gateway.services.config.blob_dir / digest[:2] / digest[2:]
    assert _stored_files(gateway) == [stored] and stored.read_bytes() == data
    got = gateway.client.get(f"/blobs/{digest}")
    assert got.status_code == 200 and got.data == data
    assert got.mimetype == OCTET and got.headers["ETag"] == f'"0x{digest}"'
    assert "immutable" in got.headers["Cache-Control"]
    head = gateway.client.head(f"/blobs/0x{digest}")
    assert head.status_code == 200 and head.data == b""
    assert int(head.headers["Content-Length"]) == len(data)
    assert (
        gateway.client.get(
            f"/blobs/{digest}", headers={"If-None-Match": f'"0x{digest}"'}
        ).status_code
        == 304
    )
    part = gateway.client.get(f"/blobs/{digest}", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.data == data[:10]


def test_a_body_that_does_not_hash_to_its_name_is_not_stored(gateway: Gateway) -> None:
    """A PUT whose body hashes to another digest is a 400 digest-mismatch; nothing stays."""
    data = b"the real bytes"
    claimed = _digest(b"other bytes")
    body = problem(
        gateway.client.put(f"/blobs/{claimed}", data=data, content_type=OCTET),
        400,
        "digest-mismatch",
    )
    assert (body["expected"], body["actual"]) == (claimed, _digest(data))
    assert _stored_files(gateway) == []
    problem(gateway.client.get(f"/blobs/{claimed}"), 404, "not-found")


def test_a_blob_over_the_limit_is_refused(make_gateway: MakeGateway) -> None:
    """A blob larger than blob_bytes_max is a 413 problem and nothing is stored; JSON
    bodies keep their own, smaller, limit."""
    gateway = make_gateway(blob_bytes_max=4096)
    data = b"x" * 4097
    body = problem(
        gateway.client.put(f"/blobs/{_digest(data)}", data=data, content_type=OCTET),
        413,
        "payload-too-large",
    )
    assert body["bytes_max"] == 4096
    assert _stored_files(gateway) == []
    fits = b"y" * 4096
    assert (
        gateway.client.put(f"/blobs/{_digest(fits)}", data=fits, content_type=OCTET).status_code
        == 201
    )


def test_a_valid_safetensors_file_is_stored(gateway: Gateway) -> None:
    """A checkpoint made by the safetensors library passes the header check."""
    data = _checkpoint()
    response = gateway.client.put(f"/blobs/{_digest(data)}", data=data, content_type=SAFETENSORS)
    assert response.status_code == 201, response.get_json()
    assert gateway.client.get(f"/blobs/{_digest(data)}").data == data


def _lying_header(data: bytes) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + length].replace(b"[3,4]", b"[4,4]")
    return struct.pack("<Q", len(header)) + header + data[8 + length :]


def test_malformed_safetensors_are_refused_and_not_stored(gateway: Gateway) -> None:
    """A truncated file, a header that lies about a shape, and a pickle sent as
    safetensors are each a 400 invalid-blob, and none is stored."""
    good = _checkpoint()
    cases = {
        "truncated": good[:-5],
        "lying header": _lying_header(good),
        "pickle": pickle.dumps({"w": list(range(100))}, protocol=4),
        "empty": b"",
    }
    for name, data in cases.items():
        response = gateway.client.put(
            f"/blobs/{_digest(data)}", data=data, content_type=SAFETENSORS
        )
        body = problem(response, 400, "invalid-blob")
        assert body["media_type"] == SAFETENSORS, name
    assert _stored_files(gateway) == []


def test_blob_requests_are_checked_before_anything_is_read(gateway: Gateway) -> None:
    """A name that is not a digest is a 400, an unknown media type a 415, an absent blob
    a 404 (for GET and HEAD)."""
    body = problem(
        gateway.client.put("/blobs/not-a-digest", data=b"x", content_type=OCTET),
        400,
        "invalid-digest",
    )
    assert body["value"] == "not-a-digest"
    data = b"{}"
    problem(
        gateway.client.put(f"/blobs/{_digest(data)}", data=data, content_type="application/json"),
        415,
        "unsupported-media-type",
    )
    absent = _digest(b"absent")
    problem(gateway.client.get(f"/blobs/{absent}"), 404, "not-found")
    assert gateway.client.head(f"/blobs/{absent}").status_code == 404
    assert _stored_files(gateway) == []


def test_a_streamed_body_without_length_is_cut_at_the_limit(make_gateway: MakeGateway) -> None:
    """A body sent without Content-Length (chunked, which the server terminates) is
    refused once it passes the limit, with nothing stored."""
    gateway = make_gateway(blob_bytes_max=4096)
    data = b"z" * 10_000
    environ = EnvironBuilder(
        path=f"/blobs/{_digest(data)}", method="PUT", data=data, content_type=OCTET
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    body_chunks, status, _headers = run_wsgi_app(gateway.app, environ, buffered=True)
    assert status.startswith("413 ")
    body = json.loads(b"".join(body_chunks))
    assert body["type"].endswith("/payload-too-large") and body["bytes_max"] == 4096
    assert _stored_files(gateway) == []

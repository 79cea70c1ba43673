"""PUT, GET and HEAD /blobs/<sha256>: the content-addressed store over HTTP.

The body of a PUT is streamed to disk while it is hashed, never held in memory; it is
stored only if it hashes to the digest in the path (and, sent as
application/vnd.safetensors, only if its header checks out). Blobs never change, so a
GET is cacheable forever and its ETag is the digest. Rules: specs/api.md.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response, request, send_file
from flask.views import MethodView
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from node.blobs import MediaType, Readable, parse_digest
from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.problems import PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, Problem
from node.gateway.services import Services

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ACCEPTED = [m.value for m in MediaType]
_IMMUTABLE_SECONDS = 365 * 24 * 3600


class WholeBody:
    """A request body that must be exactly its Content-Length long.

    gunicorn ends the body stream where the connection ends, so a client that gives up
    half way leaves a shorter body, which could even hash to the name it was sent under.
    Such a message is incomplete (RFC 9112, section 8) and must not be stored as if it
    were the whole upload: reading past its end raises ClientDisconnected (a 400).
    """

    def __init__(self, stream: Readable, length: int) -> None:
        self._stream = stream
        self._length = length
        self._seen = 0

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._stream.read(size)
        self._seen += len(chunk)
        if not chunk and self._seen < self._length:
            raise ClientDisconnected(
                f"the body ended after {self._seen} of the {self._length} bytes it announced"
            )
        return chunk


class StoredBlobSchema(ma.Schema):
    digest = ma.fields.String(required=True, metadata={"description": "0x + SHA-256 hex"})
    size = ma.fields.Integer(required=True, metadata={"description": "bytes"})


def blueprint(services: Services) -> GatewayBlueprint:
    blp = GatewayBlueprint("blobs", __name__, description="Content-addressed blobs")
    store = services.blobs

    @blp.route("/blobs/<digest>")
    class Blob(MethodView):
        @blp.doc(
            requestBody={
                "required": True,
                "content": {media: _BINARY for media in _ACCEPTED},
                "description": "The blob; application/vnd.safetensors is checked as such",
            }
        )
        @blp.response(201, StoredBlobSchema, description="Stored")
        @blp.alt_response(
            200,
            schema=StoredBlobSchema,
            description="Already stored: nothing changed",
            success=True,
        )
        @documents_problems(blp, 400, 413, 415)
        def put(self, digest: str) -> tuple[dict[str, Any], int, dict[str, str]]:
            """Store a blob under the SHA-256 digest of its bytes."""
            hex_digest = parse_digest(digest)
            if request.mimetype not in _ACCEPTED:
                raise Problem(
                    UNSUPPORTED_MEDIA_TYPE,
                    f"a blob is sent as one of {', '.join(_ACCEPTED)}, not "
                    f"{request.mimetype or 'none'}",
                    accepted=_ACCEPTED,
                )
            # Blobs have their own limit, far above the one for JSON bodies; the store
            # enforces it too, for bodies without a Content-Length.
            request.max_content_length = store.blob_bytes_max
            try:
                body: Readable = request.stream
            except RequestEntityTooLarge:
                raise Problem(
                    PAYLOAD_TOO_LARGE,
                    f"the body is larger than the {store.blob_bytes_max}-byte limit for blobs",
                    bytes_max=store.blob_bytes_max,
                ) from None
            if request.content_length is not None:
                body = WholeBody(body, request.content_length)
            stored = store.put(hex_digest, body, MediaType(request.mimetype))
            location = f"/blobs/0x{stored.digest}"
            return (
                {"digest": "0x" + stored.digest, "size": stored.size},
                201 if stored.created else 200,
                {"Location": location, "ETag": f'"0x{stored.digest}"'},
            )

        @blp.response(
            200,
            content_type=MediaType.OCTET_STREAM.value,
            description="The blob's bytes (HEAD: its headers); Range requests are served",
        )
        @documents_problems(blp, 400, 404)
        def get(self, digest: str) -> Response:
            """Download a blob; its ETag is its digest."""
            hex_digest = parse_digest(digest)
            store.size(hex_digest)  # BlobNotFound (404) before send_file opens it
            response = send_file(
                store.path(hex_digest),
                mimetype=MediaType.OCTET_STREAM.value,
                etag=f"0x{hex_digest}",
                conditional=True,
                max_age=_IMMUTABLE_SECONDS,
            )
            response.cache_control.immutable = True
            return response

    return blp

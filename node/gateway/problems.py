"""Every error the gateway returns is an RFC 7807 problem (`application/problem+json`):

    {"type": "https://blacktail.dev/problems/insufficient-funds", "title": "...",
     "status": 409, "detail": "...", "instance": "/commands", ...facts}

`type` is stable per kind of error and is what clients branch on; the facts an error
carries (account, asset, needed, ...) are copied as extension members, so a client never
parses `detail`. An exception is mapped by walking its class's MRO and taking the first
class in the table, so a subclass added later gets its base's problem type until it is
given its own. The table is the source of specs/api.md's list (a test keeps them equal).

Status rules: 400 when the request itself is wrong (malformed, fails its schema, a bad
signature, another chain, expired); 403 when the signer may not do this (or holds no
valid grant or download token); 404 when the thing is absent; 409 when the request is
fine but conflicts with the current state (funds, nonce, idempotency key, a state
machine); 413/415 for the body's size and type; 429 when a subscription's quota is used
up (`Retry-After` says until when); 503 when trying again later may succeed; 500 for our
faults, with nothing internal shown.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import marshmallow as ma
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from node.artifacts import InvalidArtifact
from node.blobs import (
    BlobError,
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    InvalidBlob,
    InvalidDigest,
)
from protocol.application import (
    ConcurrencyExhausted,
    GenesisMismatch,
    NotInitialized,
    Unauthorized,
)
from protocol.errors import (
    CommandExpired,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    InvalidProof,
    InvalidSignature,
    InvalidTransition,
    LeaseExpired,
    LedgerCorrupted,
    NonceReplayed,
    NotFound,
    ProtocolError,
    UnbalancedPosting,
    WrongChainId,
    WrongSigner,
)
from protocol.hub import QuotaExhausted
from protocol.market import GrantRequired, InvalidToken, TokenExpired

PROBLEM_BASE = "https://blacktail.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("node.gateway")


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One kind of error: its URI slug, HTTP status, title, and the exception attributes
    copied into the body (those the raised exception has)."""

    slug: str
    status: int
    title: str
    facts: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        # RFC 7807's "about:blank": no more semantics than the HTTP status itself.
        return self.slug if self.slug == "about:blank" else PROBLEM_BASE + self.slug


# -- the problem types --------------------------------------------------------------------

INVALID_INPUT = ProblemType("invalid-input", 400, "A value in the request is invalid", ("field",))
INVALID_REQUEST = ProblemType(
    "invalid-request", 400, "The request does not match its schema", ("errors",)
)
MALFORMED_JSON = ProblemType("malformed-json", 400, "The body is not valid JSON")
INVALID_SIGNATURE = ProblemType("invalid-signature", 400, "The signature is invalid")
WRONG_SIGNER = ProblemType(
    "wrong-signer", 400, "The signature is not the signer's", ("expected", "recovered")
)
WRONG_CHAIN_ID = ProblemType(
    "wrong-chain-id", 400, "The command is signed for another chain", ("expected", "got")
)
COMMAND_EXPIRED = ProblemType("command-expired", 400, "The command has expired", ("expiry", "now"))
UNBALANCED_POSTING = ProblemType(
    "unbalanced-posting", 400, "The posting set does not balance", ("asset", "debits", "credits")
)
INVALID_PROOF = ProblemType("invalid-proof", 400, "A proof does not check out")
INVALID_DIGEST = ProblemType("invalid-digest", 400, "Not a SHA-256 digest", ("value",))
DIGEST_MISMATCH = ProblemType(
    "digest-mismatch", 400, "The body does not hash to the named digest", ("expected", "actual")
)
INVALID_BLOB = ProblemType(
    "invalid-blob", 400, "The body is not what its media type says", ("media_type", "reason")
)
INVALID_ARTIFACT = ProblemType(
    "invalid-artifact",
    400,
    "The model artifact is not one the market takes",
    ("artifact", "reason", "bytes_max"),
)
PROTOCOL_ERROR = ProblemType("protocol-error", 400, "The protocol refused the request")
UNAUTHORIZED = ProblemType(
    "unauthorized", 403, "The signer may not do this", ("signer", "kind", "role")
)
GRANT_REQUIRED = ProblemType(
    "grant-required", 403, "A license grant is needed for this model", ("listing", "account")
)
INVALID_TOKEN = ProblemType("invalid-token", 403, "The download token is invalid", ("reason",))
TOKEN_EXPIRED = ProblemType(
    "token-expired", 403, "The download token has expired", ("expiry", "now")
)
NOT_FOUND = ProblemType("not-found", 404, "Not found", ("what", "key", "digest"))
METHOD_NOT_ALLOWED = ProblemType("method-not-allowed", 405, "Method not allowed")
NONCE_REPLAYED = ProblemType(
    "nonce-replayed", 409, "The nonce was already used", ("signer", "nonce")
)
IDEMPOTENCY_CONFLICT = ProblemType(
    "idempotency-conflict",
    409,
    "The client id was already used for another command",
    ("signer", "client_id"),
)
INSUFFICIENT_FUNDS = ProblemType(
    "insufficient-funds",
    409,
    "Insufficient funds",
    ("account", "asset", "bucket", "needed", "available"),
)
INVALID_TRANSITION = ProblemType(
    "invalid-transition", 409, "The current state does not allow this", ("entity", "state")
)
LEASE_EXPIRED = ProblemType(
    "lease-expired", 409, "The lease has expired", ("lease", "deadline", "now", "entity", "state")
)
PAYLOAD_TOO_LARGE = ProblemType("payload-too-large", 413, "The body is too large", ("bytes_max",))
QUOTA_EXHAUSTED = ProblemType(
    "quota-exhausted",
    429,
    "The subscription's request quota is used up",
    ("subscriber", "quota", "used", "resets_at", "retry_after_seconds"),
)
UNSUPPORTED_MEDIA_TYPE = ProblemType(
    "unsupported-media-type", 415, "Unsupported media type", ("accepted",)
)
INTERNAL_ERROR = ProblemType("internal-error", 500, "Internal error", ("incident",))
LEDGER_CORRUPTED = ProblemType("ledger-corrupted", 500, "The store breaks an invariant")
GENESIS_MISMATCH = ProblemType("genesis-mismatch", 500, "The store belongs to another network")
NOT_INITIALIZED = ProblemType("not-initialized", 503, "The ledger has no genesis record yet")
CONTENTION = ProblemType("contention", 503, "Too many concurrent writers; try again")
UNAVAILABLE = ProblemType("unavailable", 503, "Service unavailable")
STORE_UNAVAILABLE = ProblemType("store-unavailable", 503, "The event store cannot be reached")

# Exceptions, most specific first along each MRO. The builtin classes at the end apply
# only to ProtocolError and BlobError subclasses (the only exceptions handed to
# `problem_for`): a bare ValueError is a bug and gets a 500.
BY_EXCEPTION: Mapping[type[BaseException], ProblemType] = {
    InvalidInput: INVALID_INPUT,
    WrongSigner: WRONG_SIGNER,
    InvalidSignature: INVALID_SIGNATURE,
    WrongChainId: WRONG_CHAIN_ID,
    CommandExpired: COMMAND_EXPIRED,
    UnbalancedPosting: UNBALANCED_POSTING,
    InvalidProof: INVALID_PROOF,
    NonceReplayed: NONCE_REPLAYED,
    IdempotencyConflict: IDEMPOTENCY_CONFLICT,
    InsufficientFunds: INSUFFICIENT_FUNDS,
    LeaseExpired: LEASE_EXPIRED,
    QuotaExhausted: QUOTA_EXHAUSTED,
    InvalidTransition: INVALID_TRANSITION,
    TokenExpired: TOKEN_EXPIRED,
    InvalidToken: INVALID_TOKEN,
    GrantRequired: GRANT_REQUIRED,
    Unauthorized: UNAUTHORIZED,
    NotFound: NOT_FOUND,
    NotInitialized: NOT_INITIALIZED,
    ConcurrencyExhausted: CONTENTION,
    GenesisMismatch: GENESIS_MISMATCH,
    LedgerCorrupted: LEDGER_CORRUPTED,
    InvalidDigest: INVALID_DIGEST,
    DigestMismatch: DIGEST_MISMATCH,
    InvalidBlob: INVALID_BLOB,
    InvalidArtifact: INVALID_ARTIFACT,
    BlobTooLarge: PAYLOAD_TOO_LARGE,
    BlobNotFound: NOT_FOUND,
    PermissionError: UNAUTHORIZED,
    LookupError: NOT_FOUND,
    AssertionError: LEDGER_CORRUPTED,
    RuntimeError: UNAVAILABLE,
    ValueError: INVALID_INPUT,
    ProtocolError: PROTOCOL_ERROR,
    BlobError: PROTOCOL_ERROR,
}
BY_STATUS: Mapping[int, ProblemType] = {
    400: ProblemType("bad-request", 400, "Bad request"),
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: PAYLOAD_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
    500: INTERNAL_ERROR,
    503: UNAVAILABLE,
}
# Every type a response may carry, for the docs and the test that keeps specs/api.md true.
PROBLEM_TYPES: tuple[ProblemType, ...] = tuple(
    {
        t.slug: t
        for t in (
            *BY_EXCEPTION.values(),
            *BY_STATUS.values(),
            INVALID_REQUEST,
            MALFORMED_JSON,
            STORE_UNAVAILABLE,
        )
    }.values()
)
# Statuses whose problems also tell the client when to retry.
_RETRY_AFTER_SECONDS = {503: "1"}


class Problem(Exception):
    """An error the gateway itself raises (not the protocol's): a type, a detail, facts."""

    def __init__(self, kind: ProblemType, detail: str, **facts: Any) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.facts = facts


class ProblemSchema(ma.Schema):
    """An RFC 7807 problem; extension members (the error's facts) may follow."""

    class Meta:
        unknown = ma.INCLUDE

    type = ma.fields.String(
        required=True, metadata={"description": "A stable URI naming the kind of error"}
    )
    title = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String(required=True)
    instance = ma.fields.String(metadata={"description": "The request path"})


def problem_for(error: BaseException) -> ProblemType:
    """The problem type of a ProtocolError or BlobError: the first class of its MRO in
    the table (the root classes are always there)."""
    for cls in type(error).__mro__:
        kind = BY_EXCEPTION.get(cls)
        if kind is not None and cls not in (ProtocolError, BlobError):
            return kind
    return PROTOCOL_ERROR


def problem_body(kind: ProblemType, detail: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": kind.uri,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
    }
    body.update({k: v for k, v in facts.items() if v is not None and k not in body})
    return body


def error_body(error: BaseException) -> dict[str, Any]:
    """The problem body (without `instance`) of a ProtocolError, BlobError or Problem."""
    if isinstance(error, Problem):
        return problem_body(error.kind, error.detail, error.facts)
    kind = problem_for(error)
    facts = {name: getattr(error, name) for name in kind.facts if hasattr(error, name)}
    return problem_body(kind, str(error), facts)


def problem_response(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    body.setdefault("instance", request.path)
    # default=str: a fact of a type JSON lacks is shown, never a reason to fail here.
    response = Response(
        json.dumps(body, default=str), status=body["status"], mimetype=PROBLEM_MEDIA_TYPE
    )
    # A problem that knows when to try again (a quota that resets) says so; else the
    # status's default, if it has one.
    retry = body.get("retry_after_seconds") or _RETRY_AFTER_SECONDS.get(body["status"])
    if retry is not None:
        response.headers["Retry-After"] = str(retry)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def http_problem(error: HTTPException) -> Response:
    """The problem for an HTTP error (an unknown route, a wrong method, a 500)."""
    status = error.code or 500
    kind = BY_STATUS.get(status) or ProblemType("about:blank", status, HTTPStatus(status).phrase)
    facts: dict[str, Any] = {}
    if status >= 500:
        # The traceback is in the log (Flask logged it); the client gets an id to quote.
        facts["incident"] = uuid.uuid4().hex
        log.error(
            "incident %s: %s %s answered %d",
            facts["incident"],
            request.method,
            request.path,
            status,
        )
        detail = "The gateway failed to answer; the incident has been logged."
    else:
        detail = error.description or kind.title
    if status == 413 and request.max_content_length is not None:
        facts["bytes_max"] = request.max_content_length
    body = problem_body(kind, detail, facts)
    # An HTTP error's own headers (Allow on a 405) are kept, its content type is not.
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    return problem_response(body, headers)


def _handle_known(error: Exception) -> Response:
    body = error_body(error)
    if body["status"] >= 500:
        log.error("%s %s failed", request.method, request.path, exc_info=error)
    return problem_response(body)


def register_error_handlers(app: Flask) -> None:
    """Answer the protocol's, the blob store's and the gateway's errors with problems;
    HTTP errors are answered by the Api (see api.GatewayApi.handle_http_exception)."""
    app.register_error_handler(ProtocolError, _handle_known)
    app.register_error_handler(BlobError, _handle_known)
    app.register_error_handler(Problem, _handle_known)
    # A test client would otherwise re-raise instead of answering 500.
    app.config["PROPAGATE_EXCEPTIONS"] = False

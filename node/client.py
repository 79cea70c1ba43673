"""A small HTTP client for the gateway, on the standard library only.

One `GatewayClient` keeps one keep-alive connection (http.client), so it is for one
thread at a time; make one per thread. When a reused connection turns out to have been
closed by the server while idle, the request is sent once more on a new connection:
every gateway request is safe to repeat (commands are idempotent by client id, blob
uploads by digest; the dev deposit is the exception, and is for tests only). An error
answer raises GatewayError carrying the problem body (specs/api.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

from protocol.commands import SignedCommand

OCTET_STREAM = "application/octet-stream"
SAFETENSORS = "application/vnd.safetensors"
# JSON answers are bounded (a page of 1,000 events with proofs is a few MB).
json_bytes_max = 64 * 1024 * 1024
chunk_bytes = 1024 * 1024
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class GatewayError(Exception):
    """The gateway answered with an error status; `problem` is its RFC 7807 body."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('type', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = dict(problem)

    @property
    def type(self) -> str:
        """The problem type URI (https://blacktail.dev/problems/...)."""
        return str(self.problem.get("type", "about:blank"))


class BlobDigestMismatch(GatewayError):
    """A downloaded blob does not hash to the digest it was asked for by."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class GatewayClient:
    def __init__(self, base_url: str, timeout_seconds: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http://host:port URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._timeout_seconds = timeout_seconds
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- JSON ---------------------------------------------------------------------------

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._checked(self.request("GET", _with_query(path, params))).json()

    def post_json(self, path: str, body: Any) -> Any:
        return self.post_json_reply(path, body).json()

    def post_json_reply(self, path: str, body: Any) -> Reply:
        """POST `body` as JSON; the reply (status and body) unless it is an error."""
        data = json.dumps(body).encode()
        return self._checked(self.request("POST", path, data, {"Content-Type": "application/json"}))

    def submit(self, command: SignedCommand, context: Mapping[str, Any] | None = None) -> Any:
        """POST /commands; the result (a retry gets the first result again)."""
        body = command.to_json()
        if context is not None:
            body["context"] = dict(context)
        return self.post_json("/commands", body)

    # -- blobs ---------------------------------------------------------------------------

    def put_blob(self, digest: str, data: bytes | Path, media_type: str = OCTET_STREAM) -> Any:
        """Upload `data` (bytes, or a file streamed from disk) under its SHA-256 digest."""
        headers = {"Content-Type": media_type}
        path = f"/blobs/{digest}"
        if isinstance(data, bytes):
            return self._checked(self.request("PUT", path, data, headers)).json()
        headers["Content-Length"] = str(data.stat().st_size)
        for attempt in range(2):
            # A file half sent cannot be sent again: reopen it to retry a stale connection.
            with data.open("rb") as handle:
                try:
                    response = self._start("PUT", path, handle, headers, retry=False)
                except _STALE:
                    if attempt:
                        raise
                    continue
                return self._checked(self._finish(response, json_bytes_max)).json()
        raise AssertionError("unreachable")

    def get_blob(self, digest: str) -> bytes:
        """Download a blob, checking that it hashes to `digest`."""
        data = self._checked(self.request("GET", f"/blobs/{digest}")).body
        _check_digest(digest, hashlib.sha256(data).hexdigest())
        return data

    def download_blob(self, digest: str, target: Path) -> int:
        """Stream a blob to `target` (written atomically), checking its digest; its size."""
        response = self._start("GET", f"/blobs/{digest}", None, {}, retry=True)
        if response.status >= 400:
            self._checked(self._finish(response, json_bytes_max))
        hasher = hashlib.sha256()
        size = 0
        temporary = target.with_name(target.name + ".part")
        try:
            with temporary.open("wb") as handle:
                while chunk := response.read(chunk_bytes):
                    hasher.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
            _check_digest(digest, hasher.hexdigest())
        except BaseException:
            self.close()
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, target)
        if response.will_close:
            self.close()
        return size

    def blob_size(self, digest: str) -> int | None:
        """HEAD /blobs/<digest>: the blob's size, or None if it is not stored."""
        reply = self.request("HEAD", f"/blobs/{digest}")
        if reply.status == 404:
            return None
        self._checked(reply)
        return int(reply.headers["content-length"])

    # -- plumbing ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request and read the whole answer, whatever its status."""
        response = self._start(method, path, body, headers or {}, retry=True)
        return self._finish(response, 0 if method == "HEAD" else json_bytes_max)

    def _start(
        self,
        method: str,
        path: str,
        body: bytes | IO[bytes] | None,
        headers: Mapping[str, str],
        *,
        retry: bool,
    ) -> http.client.HTTPResponse:
        # A kept connection the server closed while idle fails on first use: send once
        # more on a fresh one (when `retry`; every gateway request is safe to repeat).
        for attempt in range(2):
            connection = self._open()
            try:
                # The server may answer before reading the whole body (a 413) and stop
                # reading: its answer can still be read. If the connection was merely
                # stale, reading it fails and the request is sent again below.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    connection.request(
                        method, self._prefix + path, body=body, headers=dict(headers)
                    )
                return connection.getresponse()
            except _STALE:
                self.close()
                if attempt or not retry:
                    raise
            except http.client.HTTPException as error:
                self.close()
                if isinstance(error, OSError):
                    raise
                raise _broken(error) from error
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def _finish(self, response: http.client.HTTPResponse, bytes_max: int) -> Reply:
        try:
            body = response.read(bytes_max + 1) if bytes_max else response.read()
            if bytes_max and len(body) > bytes_max:
                raise GatewayError(response.status, {"detail": f"answer over {bytes_max} bytes"})
            if response.length:
                # read(n) returns what came before the connection closed without saying
                # that it fell short of Content-Length; the bytes still owed say it.
                raise http.client.IncompleteRead(body, response.length)
        except http.client.HTTPException as error:
            self.close()
            if isinstance(error, OSError):
                raise  # RemoteDisconnected is a ConnectionResetError already
            raise _broken(error) from error
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)

    def _open(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self._timeout_seconds
            )
        return self._connection

    @staticmethod
    def _checked(reply: Reply) -> Reply:
        if reply.status < 400:
            return reply
        try:
            problem = reply.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {"status": reply.status, "detail": reply.body[:200].decode("replace")}
        raise GatewayError(reply.status, problem)


def _broken(error: http.client.HTTPException) -> ConnectionError:
    """An answer cut off or garbled in transit (the gateway died while answering) as the
    operating error it is: a ConnectionError (an OSError) like any other broken
    connection, which callers retry, not http.client's own exception tree."""
    return ConnectionError(f"the gateway's answer broke off: {error!r}")


def _with_query(path: str, params: Mapping[str, Any] | None) -> str:
    if not params:
        return path
    present = {k: v for k, v in params.items() if v is not None}
    return f"{path}?{urlencode(present)}" if present else path


def _check_digest(expected: str, actual: str) -> None:
    if expected.lower().removeprefix("0x") != actual:
        raise BlobDigestMismatch(
            200, {"detail": f"the blob hashes to 0x{actual}, not to {expected}"}
        )

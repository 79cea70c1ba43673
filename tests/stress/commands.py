"""Signing and sending commands in stress tests: unique client ids and nonces, answers kept
whatever their status, and races (several requests released at the same instant)."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from node.client import GatewayClient
from protocol.commands import SignedCommand, sign_command
from protocol.keys import PrivateKey

T = TypeVar("T")
race_seconds_max = 60.0
_numbers = itertools.count(1)


def signed(key: PrivateKey, kind: str, chain_id: int, **fields: Any) -> SignedCommand:
    """`fields` signed as a `kind` command, with a fresh client id, nonce and expiry unless
    given."""
    fields.setdefault("clientId", f"stress-{next(_numbers)}-{secrets.token_hex(6)}")
    fields.setdefault("nonce", secrets.randbits(63))
    fields.setdefault("expiry", int(time.time()) + 600)
    return sign_command(key, kind, chain_id, fields)


def resigned(key: PrivateKey, command: SignedCommand) -> SignedCommand:
    """The same command (same client id and payload) signed again with a new nonce and
    expiry: what a client does when it retries after losing an answer."""
    message = dict(command.message)
    message["nonce"] = secrets.randbits(63)
    message["expiry"] = int(time.time()) + 601
    return sign_command(key, command.kind, command.chain_id, message)


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def slug(self) -> str:
        """The problem type's last part ("insufficient-funds"), or "" for a success."""
        if self.status < 400:
            return ""
        return str(self.body.get("type", "")).rsplit("/", 1)[-1]


def send(
    base_url: str, path: str, command: SignedCommand, context: dict[str, Any] | None = None
) -> Answer:
    """POST `command` to `path` of the gateway at `base_url` on a connection of its own."""
    body = command.to_json()
    if context is not None:
        body["context"] = context
    with GatewayClient(base_url) as client:
        reply = client.request(
            "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
    return Answer(reply.status, reply.json())


def race(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run every call on its own thread, all released together; their results in order
    (a call that raised re-raises here)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], T]) -> None:
        try:
            barrier.wait(timeout=race_seconds_max)
            results[index] = call()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=race_seconds_max)
        assert not thread.is_alive(), "a raced request did not finish"
    if errors:
        raise errors[0]
    return results

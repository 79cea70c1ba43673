"""A load generator for crash tests: threads that send signed ledger commands (operator
Deposits, Transfers between users, and batches of both) to whatever gateway is up, and
remember, for every command, what the client learnt about it.

A command ends in one of three states, from the client's side only:

- **acked**: a 2xx answer (201, or 200 for a retry) carried its result;
- **refused**: a 4xx problem said it was not applied;
- **unknown**: the connection broke (the gateway was killed) or the answer was a 503
  before any of the above. A client would retry it with the same client id; the
  generator retries about half of these once the gateway is back (the rest stay unknown,
  to check that a command cut off in flight is either whole in the log or absent).

Every loop is bounded: by a stop event, by `commands_max` per thread, and by
`idle_seconds_max` of waiting for a gateway to come back.
"""

from __future__ import annotations

import http.client
import json
import random
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from node.client import GatewayClient
from protocol.commands import SignedCommand, derive_legs, parse_kind, sign_command
from protocol.keys import PrivateKey
from protocol.ledger import Leg, balance_key

ACKED, REFUSED, UNKNOWN = "acked", "refused", "unknown"
commands_max = 20_000
retries_max = 3
idle_seconds_max = 120.0
request_seconds = 30.0
batch_commands = (2, 6)


@dataclass
class Attempt:
    """One command and what the client knows of its fate."""

    command: SignedCommand
    legs: tuple[Leg, ...]
    state: str = UNKNOWN
    status: int | None = None
    result: dict[str, Any] | None = None
    problem: dict[str, Any] | None = None
    sends: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.command.signer, str(self.command.message["clientId"])


class Endpoint:
    """The URL of the gateway that is up, if any; threads wait on it while none is."""

    def __init__(self) -> None:
        self._url: str | None = None
        self._changed = threading.Condition()

    def up(self, url: str) -> None:
        with self._changed:
            self._url = url
            self._changed.notify_all()

    def down(self) -> None:
        with self._changed:
            self._url = None

    def wait(self, timeout_seconds: float) -> str | None:
        with self._changed:
            self._changed.wait_for(lambda: self._url is not None, timeout=timeout_seconds)
            return self._url


@dataclass
class LoadGenerator:
    """`threads` senders of signed commands for `users` (and the operator's deposits)."""

    operator: PrivateKey
    users: Sequence[PrivateKey]
    chain_id: int
    endpoint: Endpoint
    seed: int
    threads: int = 4
    attempts: list[Attempt] = field(default_factory=list)
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for number in range(self.threads):
            worker = threading.Thread(
                target=self._run, args=(random.Random(self.seed * 1000 + number),), daemon=True
            )
            self._workers.append(worker)
            worker.start()

    def stop(self) -> None:
        """Stop sending and wait for every in-flight request to end."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=request_seconds + 10)
            assert not worker.is_alive(), "a load thread did not stop"

    def count(self, state: str) -> int:
        with self._lock:
            return sum(1 for attempt in self.attempts if attempt.state == state)

    def expected_balances(self, applied: set[tuple[str, str]]) -> dict[str, dict[str, int]]:
        """Balances from the legs the client derived itself, for the commands in `applied`
        (account -> "ASSET/bucket" -> amount, zero balances left out)."""
        balances: dict[str, dict[str, int]] = {}
        for attempt in self.attempts:
            if attempt.key not in applied:
                continue
            for leg in attempt.legs:
                account = balances.setdefault(leg.account, {})
                key = balance_key(leg.asset.value, leg.bucket)
                account[key] = account.get(key, 0) + leg.effect
        return {
            name: {k: v for k, v in buckets.items() if v}
            for name, buckets in balances.items()
            if any(buckets.values())
        }

    # -- one thread ---------------------------------------------------------------------

    def _run(self, rng: random.Random) -> None:
        client: GatewayClient | None = None
        retry: list[Attempt] = []
        sent = 0
        waiting_since = time.monotonic()
        while not self._stop.is_set() and sent < commands_max:
            url = self.endpoint.wait(timeout_seconds=0.2)
            if url is None:
                if time.monotonic() - waiting_since > idle_seconds_max:
                    return  # nobody brought a gateway back: the test has failed already
                continue
            waiting_since = time.monotonic()
            if client is None or client.base_url != url:
                client = GatewayClient(url, request_seconds)
            if retry:
                attempt = retry.pop()
                batch = [attempt]
                self._send_one(client, attempt)
            else:
                batch = self._make(rng)
                self._record(batch)
                if len(batch) == 1:
                    self._send_one(client, batch[0])
                else:
                    self._send_batch(client, batch)
            sent += len(batch)
            for attempt in batch:
                if attempt.state == UNKNOWN and attempt.sends < retries_max and rng.random() < 0.5:
                    retry.append(attempt)
            if any(attempt.state == UNKNOWN for attempt in batch):
                client.close()
        if client is not None:
            client.close()

    def _record(self, batch: list[Attempt]) -> None:
        with self._lock:
            self.attempts.extend(batch)

    def _make(self, rng: random.Random) -> list[Attempt]:
        roll = rng.random()
        if roll < 0.15:
            count = rng.randint(*batch_commands)
            return [self._command(rng) for _ in range(count)]
        return [self._command(rng)]

    def _command(self, rng: random.Random) -> Attempt:
        fields: dict[str, Any] = {
            "clientId": f"load-{secrets.token_hex(12)}",
            "nonce": secrets.randbits(63),
            "expiry": int(time.time()) + 600,
        }
        if rng.random() < 0.3:
            signer, kind = self.operator, "Deposit"
            fields |= {
                "account": rng.choice(self.users).address,
                "asset": "BLACK",
                "amount": rng.randint(1_000, 5_000),
                "chainRef": f"{self.chain_id}:0x{secrets.token_hex(32)}:0",
            }
        else:
            signer, to = rng.sample(list(self.users), 2)
            kind = "Transfer"
            fields |= {
                "to": to.address,
                "asset": "BLACK",
                "amount": rng.randint(1, 300),
                "memo": "",
            }
        command = sign_command(signer, kind, self.chain_id, fields)
        legs = derive_legs(parse_kind(kind), command.signer, command.message)
        return Attempt(command, legs)

    def _send_one(self, client: GatewayClient, attempt: Attempt) -> None:
        attempt.sends += 1
        reply = self._post(client, "/commands", attempt.command.to_json())
        if reply is None:
            return
        status, body = reply
        self._settle(attempt, status, body)

    def _send_batch(self, client: GatewayClient, batch: list[Attempt]) -> None:
        for attempt in batch:
            attempt.sends += 1
        reply = self._post(
            client, "/commands/batch", {"commands": [a.command.to_json() for a in batch]}
        )
        if reply is None:
            return
        status, body = reply
        if status != 200:
            for attempt in batch:
                self._settle(attempt, status, body)
            return
        items = body["results"]
        assert len(items) == len(batch), body
        for attempt, item in zip(batch, items, strict=True):
            self._settle(attempt, item["status"], item.get("result") or item.get("problem"))

    def _post(self, client: GatewayClient, path: str, body: Any) -> tuple[int, Any] | None:
        """The status and JSON body, or None when the exchange broke off."""
        try:
            reply = client.request(
                "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            return reply.status, reply.json()
        except (OSError, http.client.HTTPException, ValueError):
            client.close()
            return None

    def _settle(self, attempt: Attempt, status: int, body: Any) -> None:
        attempt.status = status
        if status in (200, 201):
            attempt.state, attempt.result = ACKED, body
        elif 400 <= status < 500:
            attempt.state, attempt.problem = REFUSED, body
        elif status == 503:
            attempt.problem = body  # try again later: still unknown
        else:
            with self._lock:
                self.server_errors.append({"status": status, "body": body})

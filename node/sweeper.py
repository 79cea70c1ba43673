"""The operator's sweeper: expires what is overdue (leases, jobs, verdicts, rulings) by
signing `Sweep` commands, so the network moves on without waiting for a lazy caller.

Every sweep has a client id derived from its target and the deadline it enforces, so two
gateways (or two workers) sweeping the same thing record it once: the second gets the
first answer back. Only one worker per data directory sweeps at a time (a file lock); with
several hosts on one PostgreSQL store the client ids keep sweeps single.
"""

from __future__ import annotations

import fcntl
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TypeVar

from eventsourcing.domain import Aggregate

from protocol.application import Network
from protocol.catalog import Catalog
from protocol.commands import sign_command
from protocol.errors import ProtocolError
from protocol.jobs import Commitment, Dispute, Job, Lease
from protocol.keys import PrivateKey

A = TypeVar("A", bound=Aggregate)
log = logging.getLogger(__name__)
sweeps_per_pass_max = 256
command_seconds = 600


def overdue(catalog: Catalog, now: int) -> Iterator[tuple[str, int, str]]:
    """(target id, deadline, reason) of everything overdue at `now`, oldest first."""
    for lease in _all(catalog, Lease):
        if lease.state == "open" and lease.deadline < now:
            yield lease.key, lease.deadline, "lease deadline passed"
    for job in _all(catalog, Job):
        if not job.finished and job.deadline < now:
            yield job.key, job.deadline, "job deadline passed"
    for commitment in _all(catalog, Commitment):
        if commitment.status != "pending":
            continue
        if commitment.openings is None and commitment.opening_deadline < now:
            yield commitment.key, commitment.opening_deadline, "sampled states not opened"
        elif commitment.verdict_deadline < now:
            yield commitment.key, commitment.verdict_deadline, "verdict overdue"
    for dispute in _all(catalog, Dispute):
        if dispute.status == "open" and (not dispute.referee or dispute.deadline < now):
            yield dispute.key, dispute.deadline, "ruling overdue"


def _all(catalog: Catalog, cls: type[A]) -> Iterator[A]:
    cursor: int | None = 0
    while cursor is not None:
        items, cursor = catalog.page(cls, cursor, 1000)
        yield from items


def sweep_once(app: Network, catalog: Catalog, operator: PrivateKey, now: int | None = None) -> int:
    """Sign and submit a Sweep for each overdue target; return how many were recorded."""
    moment = int(time.time()) if now is None else now
    recorded = 0
    for count, (target, deadline, reason) in enumerate(overdue(catalog, moment)):
        if count >= sweeps_per_pass_max:
            break
        command = sign_command(
            operator,
            "Sweep",
            app.chain_id,
            {
                "target": target,
                "reason": reason,
                "clientId": f"sweep-{target}-{deadline}",
                "nonce": secrets.randbits(63),
                "expiry": moment + command_seconds,
            },
        )
        try:
            result = app.submit(command, now=moment)
        except ProtocolError as error:
            # Someone else moved it first (a heartbeat, a late verdict): nothing to do.
            log.debug("sweep of %s refused: %s", target, error)
            continue
        recorded += 0 if result.duplicate else 1
    return recorded


class Sweeper:
    """A daemon thread that sweeps every `interval_seconds` while it holds the lock file."""

    def __init__(
        self,
        app: Network,
        catalog: Catalog,
        operator: PrivateKey,
        lock_path: Path,
        interval_seconds: float = 5.0,
        grace_seconds: float = 0.0,
    ) -> None:
        self.app = app
        self.catalog = catalog
        self.operator = operator
        self.lock_path = lock_path
        self.interval_seconds = interval_seconds
        self.grace_seconds = grace_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)
        self._lock_file: IO[bytes] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _holds_lock(self) -> bool:
        if self._lock_file is not None:
            return True
        handle = open(self.lock_path, "ab")  # noqa: SIM115 - held for the thread's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    def _run(self) -> None:
        # The first pass waits out the grace: what fell due while no gateway was up gets
        # its late answer (an opening, a verdict, a heartbeat) before it is swept.
        if self._stop.wait(max(0.0, self.grace_seconds - self.interval_seconds)):
            return
        while not self._stop.wait(self.interval_seconds):
            try:
                if self._holds_lock():
                    sweep_once(self.app, self.catalog, self.operator)
            except Exception:  # An operating error must not kill the sweeper for good.
                log.exception("sweep pass failed")
        if self._lock_file is not None:
            self._lock_file.close()

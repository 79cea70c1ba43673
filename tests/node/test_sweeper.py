"""The operator's sweeper: overdue leases, jobs and verdicts are swept exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.sweeper import Sweeper, overdue, sweep_once
from protocol.application import Network
from protocol.catalog import Catalog
from protocol.storage import memory_storage
from tests.protocol.compute_world import World


@pytest.fixture
def world() -> Iterator[World]:
    app = Network(memory_storage())
    yield World(app)
    app.close()


def test_sweeper_expires_an_overdue_lease_once(world: World) -> None:
    """Past a lease's deadline one sweep pass expires it and requeues the segment; a
    second pass finds nothing overdue and records nothing."""
    w = world
    w.setup()
    job = w.submit_job()
    lease = w.lease(w.providers[0], job)
    catalog = Catalog(w.app.event_log)
    assert list(overdue(catalog, w.now)) == []
    later = lease["deadline"] + 1
    assert [target for target, _, _ in overdue(catalog, later)] == [lease["lease"]]
    assert sweep_once(w.app, catalog, w.operator, now=later) == 1
    assert w.get_lease(lease["lease"]).state == "expired"
    assert w.get_job(job).segment_state == "queued"
    size = w.log_size()
    assert sweep_once(w.app, catalog, w.operator, now=later) == 0
    assert w.log_size() == size


def test_sweeper_reassigns_an_overdue_verdict_and_expires_an_overdue_job(world: World) -> None:
    """A verdict past its deadline goes to another verifier, and a job past its deadline
    is expired with the unearned budget refunded, in one pass."""
    w = world
    w.setup(verifiers=3)
    job = w.submit_job()
    commitment = w.commit(w.providers[0], w.lease(w.providers[0], job)["lease"])
    first = w.get_commitment(commitment).verifier
    catalog = Catalog(w.app.event_log)
    later = w.get_job(job).deadline + 1
    assert sweep_once(w.app, catalog, w.operator, now=later) == 2
    assert w.get_commitment(commitment).verifier != first
    assert w.get_job(job).status == "expired"


def test_a_started_sweeper_waits_out_its_grace_before_the_first_pass(
    world: World, tmp_path: Path
) -> None:
    """A sweeper started with a grace leaves a lease that is already overdue alone until
    the grace has passed (its provider may be reconnecting to the restarted gateway), and
    expires it on the first pass after."""
    w = world
    w.now -= 3600  # everything below happened an hour ago: the lease is long overdue
    w.setup()
    job = w.submit_job()
    lease = w.lease(w.providers[0], job)["lease"]
    sweeper = Sweeper(
        w.app,
        Catalog(w.app.event_log),
        w.operator,
        tmp_path / "sweeper.lock",
        interval_seconds=0.1,
        grace_seconds=1.5,
    )
    started = time.monotonic()
    sweeper.start()
    try:
        time.sleep(1.0)
        assert w.get_lease(lease).state == "open"
        while w.get_lease(lease).state != "expired":
            assert time.monotonic() - started < 15, "never swept"
            time.sleep(0.05)
        assert time.monotonic() - started >= 1.5
    finally:
        sweeper.stop()
    assert w.get_job(job).segment_state == "queued"

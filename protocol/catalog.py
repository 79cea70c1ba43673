"""The compute read model: every provider, verifier, job, lease, commitment and dispute,
and the market's listings, grants, reviews and hub state, folded from the event log as it
grows, for lists and filters.

Aggregates are strongly consistent when read one by one from the repository; lists need
an index, and this is it: a projection fed by `EventLog.sync` (each new leaf, in log
order), built with the domain's own apply code. Items keep the order they were created
in, so a position in that order is a stable paging cursor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from protocol.jobs import Commitment, Dispute, Job, Lease
from protocol.log import COMPUTE_AGGREGATES, EVENT_AGGREGATES, EventLog, event_from_leaf
from protocol.market import Listing, Review
from protocol.participants import Provider, Verifier

A = TypeVar("A", bound=Aggregate)
# A filter scans at most this many items per page request, so one request's cost is
# bounded however selective its filter is; the cursor resumes where the scan stopped.
scan_items_max = 10_000

LISTED: dict[str, type[Aggregate]] = {
    "providers": Provider,
    "verifiers": Verifier,
    "jobs": Job,
    "leases": Lease,
    "commitments": Commitment,
    "disputes": Dispute,
    "listings": Listing,
    "reviews": Review,
}


class Catalog:
    """Compute aggregates by id and, per class, in creation order."""

    def __init__(self, event_log: EventLog) -> None:
        self.event_log = event_log
        self.aggregates: dict[UUID, Aggregate] = {}
        self.order: dict[type[Aggregate], list[UUID]] = {cls: [] for cls in COMPUTE_AGGREGATES}
        self._lock = threading.Lock()
        event_log.listeners.append(self._apply)

    def _apply(self, leaf: dict[str, Any]) -> None:
        cls = EVENT_AGGREGATES[leaf["type"]]
        if cls not in self.order:
            return
        event = event_from_leaf(leaf)
        with self._lock:
            current = self.aggregates.get(event.originator_id)
            aggregate = event.mutate(current)
            assert aggregate is not None
            self.aggregates[event.originator_id] = aggregate
            if current is None:
                self.order[cls].append(event.originator_id)

    def sync(self) -> None:
        self.event_log.sync()

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        self.sync()
        aggregate = self.aggregates.get(aggregate_id)
        return aggregate if isinstance(aggregate, cls) else None

    def page(
        self,
        cls: type[A],
        cursor: int,
        limit: int,
        keep: Callable[[A], bool] | None = None,
    ) -> tuple[list[A], int | None]:
        """Up to `limit` items of `cls` from creation position `cursor` on that `keep`
        accepts, and the cursor of the next page (None at the end)."""
        self.sync()
        with self._lock:
            ids = self.order[cls]
            items: list[A] = []
            position = cursor
            scanned = 0
            while position < len(ids) and len(items) < limit and scanned < scan_items_max:
                aggregate = self.aggregates[ids[position]]
                position += 1
                scanned += 1
                assert isinstance(aggregate, cls)
                if keep is None or keep(aggregate):
                    items.append(aggregate)
            return items, (position if position < len(ids) else None)

    def count(self, cls: type[Aggregate]) -> int:
        self.sync()
        return len(self.order[cls])

"""Durable ledger transfers per second, against the raw eventsourcing save of the same events.

Each accepted transfer records four events in one transaction (receipt, nonce record, two
account postings). The baseline saves the same number of plain events, grouped the same
way (one transaction per transfer, or per batch), through the same library onto the same
kind of store, so the ratio is the cost of the domain: signature recovery, EIP-712
hashing, validation, balance checks and the bigger events. Commands are signed before
timing starts. Stores: an SQLite file (always) and PostgreSQL (when its server binaries
are installed: a throwaway cluster on 127.0.0.1 is started and stopped).

Usage: python bench/bench_ledger.py [--json] [--transfers N] [--batch B]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import FastSigner, figure, finish, machine, say
from protocol.application import Network
from protocol.commands import SignedCommand
from protocol.keys import PrivateKey
from protocol.storage import Storage, postgres_storage, sqlite_storage

CHAIN_ID = 31337
ACCOUNTS = 64
EVENTS_PER_TRANSFER = 4


class Plain(Aggregate):
    """The baseline's aggregate: one small integer per event."""

    @event("Made")
    def __init__(self, value: int) -> None:
        self.value = value

    @event("Changed")
    def change(self, value: int) -> None:
        self.value = value


def workload(transfers: int) -> tuple[PrivateKey, list[SignedCommand], list[SignedCommand]]:
    sign = FastSigner()
    operator = PrivateKey.from_bytes((0xB1AC7).to_bytes(32, "big"))
    keys = [PrivateKey.from_bytes((0x1000 + i).to_bytes(32, "big")) for i in range(ACCOUNTS)]
    expiry = int(time.time()) + 3600
    funding = [
        sign(
            operator,
            "Deposit",
            CHAIN_ID,
            {
                "account": key.address,
                "asset": "BLACK",
                "amount": 10**27,
                "chainRef": f"{CHAIN_ID}:0x{i:064x}:0",
                "clientId": f"fund-{i}",
                "nonce": i,
                "expiry": expiry,
            },
        )
        for i, key in enumerate(keys)
    ]
    commands = []
    for i in range(transfers):
        source = keys[i % ACCOUNTS]
        target = keys[(i * 7 + 1) % ACCOUNTS]
        if target is source:
            target = keys[(i + 1) % ACCOUNTS]
        commands.append(
            sign(
                source,
                "Transfer",
                CHAIN_ID,
                {
                    "to": target.address,
                    "asset": "BLACK",
                    "amount": 1 + i,
                    "memo": "bench",
                    "clientId": f"t-{i}",
                    "nonce": 10**6 + i,
                    "expiry": expiry,
                },
            )
        )
    return operator, funding, commands


def run_domain(
    storage: Storage,
    operator: PrivateKey,
    funding: list[SignedCommand],
    commands: list[SignedCommand],
    batch: int,
) -> float:
    """Seconds to apply `commands` (one per transaction when batch == 1)."""
    app = Network(storage)
    app.initialize(CHAIN_ID, operator.address)
    app.submit_many(funding)
    started = time.perf_counter()
    if batch == 1:
        for command in commands:
            app.submit(command)
    else:
        for i in range(0, len(commands), batch):
            results = app.submit_many(commands[i : i + batch])
            assert all(not isinstance(r, Exception) for r in results), results[:3]
    seconds = time.perf_counter() - started
    app.close()
    return seconds


def run_raw(storage: Storage, transfers: int, batch: int) -> float:
    """Seconds to save EVENTS_PER_TRANSFER plain events per transfer, grouped alike."""
    app: Application = Application(env=storage.env)
    aggregates = [Plain(value=i) for i in range(ACCOUNTS * 2)]
    app.save(*aggregates)
    started = time.perf_counter()
    for i in range(0, transfers, batch):
        group = []
        for j in range(i, min(i + batch, transfers)):
            for k in range(EVENTS_PER_TRANSFER):
                aggregate = aggregates[(j * EVENTS_PER_TRANSFER + k) % len(aggregates)]
                aggregate.change(value=j)
                group.extend(aggregate.collect_events())
        app.save(*group)
    seconds = time.perf_counter() - started
    app.close()
    return seconds


def store_factories(stack: contextlib.ExitStack, tmp: Path) -> dict[str, Callable[[str], Storage]]:
    """A fresh-store factory per kind of store available here."""
    factories: dict[str, Callable[[str], Storage]] = {
        "sqlite": lambda name: sqlite_storage(tmp / name),
    }
    from tests.pg_cluster import ThrowawayCluster, find_pg_bin

    if find_pg_bin() is None:
        say("# PostgreSQL server binaries not found: PostgreSQL figures skipped")
        return factories
    cluster = stack.enter_context(ThrowawayCluster())
    factories["postgres"] = lambda name: postgres_storage(cluster.create_database(name))
    return factories


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--transfers", type=int, default=4000, help="transfers timed in batches")
    parser.add_argument(
        "--single", type=int, default=400, help="transfers timed one per transaction"
    )
    parser.add_argument("--batch", type=int, default=500, help="transfers per batch")
    args = parser.parse_args()
    say(f"# {machine()}")
    operator, funding, commands = workload(max(args.transfers, args.single))
    with tempfile.TemporaryDirectory(prefix="bt-bench-") as tmp, contextlib.ExitStack() as stack:
        for kind, fresh in store_factories(stack, Path(tmp)).items():
            for mode, count, batch in (
                ("single", args.single, 1),
                ("batched", args.transfers, args.batch),
            ):
                domain = run_domain(fresh(f"d_{mode}"), operator, funding, commands[:count], batch)
                raw = run_raw(fresh(f"r_{mode}"), count, batch)
                per = "transaction" if batch == 1 else f"{batch}-transfer batch"
                figure(
                    f"ledger.{kind}.transfers_per_s_{mode}",
                    count / domain,
                    "transfers/s",
                    baseline=f"raw save, {EVENTS_PER_TRANSFER} events/transfer, one {per}",
                    ratio=domain / raw,
                )
                figure(
                    f"ledger.{kind}.raw_events_per_s_{mode}",
                    count * EVENTS_PER_TRANSFER / raw,
                    "events/s",
                )
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())

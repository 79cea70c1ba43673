"""Audit throughput: replaying an exported log with every signature checked.

The log is made by the real `Network` (in memory) from the simulated workload, exported
with a signed tree head, and cached in bench/out/ so reruns skip the generation. Figures:
- `audit.events_per_s`: the full audit (replay + every check + tree head), all cores;
- `audit.events_per_s_one_core`: the same audit with checks in-process (workers=0);
- the baseline: reading the file and hashing every line (SHA-256), the floor any audit pays;
- `audit.seconds_for_1m_events`: measured on a 1,000,000-event log with `--events 1000000`
  (the default), else extrapolated from the measured rate and labelled so.

Usage: python bench/bench_audit.py [--json] [--events N]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import FastSigner, figure, finish, machine, say
from node import simulate
from protocol import canonical
from protocol.application import Network
from protocol.audit import Replayer, audit_lines, read_lines
from protocol.keys import PrivateKey
from protocol.log import EVENT_TYPES, EventLog, split_export_line, write_export
from protocol.storage import sqlite_storage

CHAIN_ID = 31337
OUT = Path(__file__).resolve().parent / "out"
# Events per simulated command, roughly: receipt, nonce record, two or three postings.
events_per_command_guess = 3.8


def format_tag() -> str:
    """A short digest of the log's event registry and fields: a cached export made
    before the format changed is not reused."""
    shape = sorted(
        (name, sorted(getattr(cls, "__dataclass_fields__", {})))
        for name, cls in EVENT_TYPES.items()
    )
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:12]


def make_export(path: Path, events: int) -> None:
    """Run the simulated workload until the log holds at least `events` events, export it."""
    operator = PrivateKey.from_bytes((0xB1AC7).to_bytes(32, "big"))
    # SQLite, not the in-memory store: eventsourcing's in-memory recorder scans an
    # aggregate's whole history on every read, which makes a long run quadratic.
    app = Network(sqlite_storage(Path(tempfile.mkdtemp(prefix="bt-audit-gen-"))))
    app.initialize(CHAIN_ID, operator.address)
    workload = simulate.Workload(operator, CHAIN_ID, 200, seed=7, signer=FastSigner())
    log = EventLog(app)
    started = time.perf_counter()
    simulate.run(app, workload, 0, batch=256)
    while log.sync() < events:
        missing = events - log.size
        count = max(256, min(20_000, int(missing / events_per_command_guess)))
        simulate.run(app, workload, count, batch=256, fund=False)
        say(f"# generating: {log.size:,}/{events:,} events ({time.perf_counter() - started:.0f} s)")
    partial = path.with_suffix(".partial")
    with partial.open("wb") as handle:
        write_export(app, operator, handle)
    partial.rename(path)


def replay_seconds(path: Path) -> tuple[int, float]:
    """The replay alone (fold into aggregates, order and balance checks), no signatures."""
    started = time.perf_counter()
    replayer = Replayer()
    for line in read_lines(str(path)):
        parts = split_export_line(line)
        if parts is not None:
            replayer.apply(canonical.decode(parts[0]))
    return replayer.events, time.perf_counter() - started


def baseline_seconds(path: Path) -> float:
    started = time.perf_counter()
    for line in read_lines(str(path)):
        hashlib.sha256(b"\x00" + line).digest()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--events", type=int, default=1_000_000, help="size of the log audited")
    args = parser.parse_args()
    say(f"# {machine()}")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"audit-{args.events}-{format_tag()}.jsonl"
    if not path.exists():
        make_export(path, args.events)
    floor = baseline_seconds(path)
    report = audit_lines(read_lines(str(path)))
    assert report.ok, report.error
    rate = report.events / report.seconds
    figure(
        "audit.events_per_s",
        rate,
        "events/s",
        baseline="read + SHA-256 every line",
        ratio=report.seconds / floor,
    )
    figure("audit.signatures_checked", report.signatures_checked, "signatures")
    if report.events >= 1_000_000:
        figure(
            "audit.seconds_for_1m_events",
            report.seconds * 1_000_000 / report.events,
            "s (measured)",
        )
    else:
        figure("audit.seconds_for_1m_events_extrapolated", 1_000_000 / rate, "s (extrapolated)")
    events, seconds = replay_seconds(path)
    figure(
        "replay.events_per_s",
        events / seconds,
        "events/s",
        baseline="read + SHA-256 every line",
        ratio=seconds / floor,
    )
    one_core = audit_lines(read_lines(str(path)), workers=0)
    figure(
        "audit.events_per_s_one_core",
        one_core.events / one_core.seconds,
        "events/s",
        baseline="the same audit on all cores",
        ratio=report.seconds / one_core.seconds,
    )
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())

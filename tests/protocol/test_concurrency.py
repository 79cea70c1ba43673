"""Concurrent writers spending from one account never overdraw it.

Every writer races on the same account aggregate; optimistic concurrency makes all but
one save per version fail with IntegrityError, and the loser retries on fresh state.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from typing import Any

import pytest

from protocol.application import CommandResult, Network
from protocol.audit import audit_lines
from protocol.commands import SignedCommand
from protocol.errors import InsufficientFunds
from protocol.keys import PrivateKey
from protocol.log import EventLog
from protocol.storage import Storage, postgres_storage
from tests.protocol.conftest import Sign, deposit

FUNDS = 30
ATTEMPTS_PER_WRITER = 25


def spend_commands(
    sign: Sign, alice: PrivateKey, bob: PrivateKey, count: int, tag: str
) -> list[SignedCommand]:
    return [
        sign(
            alice,
            "Transfer",
            to=bob.address,
            asset="BLACK",
            amount=1,
            memo=tag,
            clientId=f"{tag}-{i}",
        )
        for i in range(count)
    ]


def outcome(results: list[object]) -> Counter[str]:
    return Counter("ok" if isinstance(r, CommandResult) else type(r).__name__ for r in results)


def assert_store_audits(storage: Storage) -> None:
    app = Network(storage)
    try:
        lines = list(EventLog(app).lines())
    finally:
        app.close()
    report = audit_lines(lines, workers=0, require_tree_head=False)
    assert report.ok, report.error


def test_two_threads_spending_the_same_account_never_overdraw(
    storage: Storage,
    network: Network,
    operator: PrivateKey,
    alice: PrivateKey,
    bob: PrivateKey,
    sign: Sign,
) -> None:
    """Two threads each try 25 one-unit spends from 30 units: exactly 30 succeed, none overdraw."""
    deposit(network, operator, alice.address, FUNDS)
    batches = [
        spend_commands(sign, alice, bob, ATTEMPTS_PER_WRITER, f"thread{n}") for n in range(2)
    ]
    results: list[list[object]] = [[], []]
    start = threading.Barrier(2)

    def writer(n: int) -> None:
        start.wait()
        for command in batches[n]:
            try:
                results[n].append(network.submit(command))
            except InsufficientFunds as error:
                results[n].append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    total = outcome(results[0]) + outcome(results[1])
    assert total == Counter({"ok": FUNDS, "InsufficientFunds": 2 * ATTEMPTS_PER_WRITER - FUNDS})
    assert network.balance(alice.address, "BLACK") == 0
    assert network.balance(bob.address, "BLACK") == FUNDS
    assert_store_audits(storage)


def _process_writer(dsn: str, commands: list[dict[str, Any]], start: Any, out: Any) -> None:
    app = Network(postgres_storage(dsn, pool_size=2))
    start.wait(timeout=60)
    counts: Counter[str] = Counter()
    for data in commands:
        try:
            app.submit(SignedCommand.from_json(data))
            counts["ok"] += 1
        except InsufficientFunds:
            counts["InsufficientFunds"] += 1
    app.close()
    out.put(dict(counts))


@pytest.mark.postgres
def test_two_processes_on_one_postgres_store_never_overdraw(
    pg_dsn: str, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """Two processes on one PostgreSQL store race 50 spends over 30 units: exactly 30 succeed."""
    storage = postgres_storage(pg_dsn)
    app = Network(storage)
    app.initialize(31337, operator.address)
    deposit(app, operator, alice.address, FUNDS)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    out = context.Queue()
    processes = [
        context.Process(
            target=_process_writer,
            args=(
                pg_dsn,
                [
                    c.to_json()
                    for c in spend_commands(sign, alice, bob, ATTEMPTS_PER_WRITER, f"proc{n}")
                ],
                start,
                out,
            ),
        )
        for n in range(2)
    ]
    for process in processes:
        process.start()
    counts = [out.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    total = Counter(counts[0]) + Counter(counts[1])
    assert total == Counter({"ok": FUNDS, "InsufficientFunds": 2 * ATTEMPTS_PER_WRITER - FUNDS})
    assert app.balance(alice.address, "BLACK") == 0
    assert app.balance(bob.address, "BLACK") == FUNDS
    app.close()
    assert_store_audits(storage)

"""The chain watcher: every Vault deposit becomes exactly one ledger credit, after its
confirmations, across restarts, re-reads and a lost cursor."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from chain.watcher import DepositWatcher, WatcherError, deposit_client_id
from protocol.assets import Asset
from protocol.audit import audit_lines
from protocol.keys import PrivateKey
from protocol.log import write_export
from tests.chain.conftest import World
from tests.chain.ledger_world import LEDGER_CHAIN_ID, bridge

BLACK = 10**18


def test_a_deposit_is_credited_once_with_its_chain_reference(world: World) -> None:
    """One on-chain deposit gives one Deposit receipt whose chainRef names tx and log."""
    b = bridge(world)
    user = world.users[0]
    b.deposit(user, Asset.BLACK, 5 * BLACK)
    credited = b.watcher.poll()
    assert len(credited) == 1 and not credited[0].duplicate
    assert b.available(user, Asset.BLACK) == 5 * BLACK
    assert b.watcher.poll() == []
    receipts = [leaf for leaf in b.leaves() if leaf["type"] == "Receipt.Accepted"]
    message = receipts[-1]["data"]["message"]  # type: ignore[index]
    deposit = credited[0].deposit
    assert message["chainRef"] == f"{deposit.chain_id}:{deposit.tx_hash}:{deposit.log_index}"
    assert message["clientId"] == deposit_client_id(message["chainRef"])


def test_a_deposit_waits_for_its_confirmations(world: World) -> None:
    """With 3 confirmations a deposit is credited only once two blocks stand on it."""
    b = bridge(world, confirmations=3)
    user = world.users[0]
    b.deposit(user, Asset.USD, 7_000_000)
    assert b.watcher.poll() == []
    world.black.mint(world.users[1].address, 1, sender=world.sender(world.admin))
    assert b.watcher.poll() == []
    world.black.mint(world.users[1].address, 1, sender=world.sender(world.admin))
    assert [c.deposit.amount for c in b.watcher.poll()] == [7_000_000]
    assert b.available(user, Asset.USD) == 7_000_000


def test_a_restarted_watcher_neither_misses_nor_repeats_a_deposit(
    world: World, tmp_path: Path
) -> None:
    """A watcher restarted from its cursor file credits only the deposits made since."""
    cursor = tmp_path / "watcher.json"
    b = bridge(world, cursor=cursor)
    alice, bob = world.users[0], world.users[1]
    b.deposit(alice, Asset.BLACK, 2 * BLACK)
    assert len(b.watcher.poll()) == 1
    b.deposit(bob, Asset.BLACK, 3 * BLACK)
    saved = json.loads(cursor.read_text())
    restarted = DepositWatcher(
        world.vault,
        world.deployment,
        b.network.submit,
        b.operator,
        LEDGER_CHAIN_ID,
        confirmations=1,
        cursor_path=cursor,
    )
    assert saved["next_block"] > world.deployment.block_number
    credited = restarted.poll()
    assert [(c.deposit.account, c.duplicate) for c in credited] == [(bob.address, False)]
    assert b.available(alice, Asset.BLACK) == 2 * BLACK
    assert b.available(bob, Asset.BLACK) == 3 * BLACK


def test_a_watcher_that_lost_its_cursor_re_reads_without_crediting_twice(world: World) -> None:
    """Reading every block again resubmits old deposits as retries: balances do not move."""
    b = bridge(world)
    user = world.users[0]
    for amount in (BLACK, 2 * BLACK):
        b.deposit(user, Asset.BLACK, amount)
    assert len(b.watcher.poll()) == 2
    size = len(b.leaves())
    fresh = DepositWatcher(
        world.vault,
        world.deployment,
        b.network.submit,
        b.operator,
        LEDGER_CHAIN_ID,
        confirmations=1,
    )
    again = fresh.poll()
    assert [c.duplicate for c in again] == [True, True]
    assert len(b.leaves()) == size
    assert b.available(user, Asset.BLACK) == 3 * BLACK
    handle = io.BytesIO()
    write_export(b.network, b.operator, handle)
    assert audit_lines(handle.getvalue().splitlines(), workers=0).ok


def test_a_cursor_of_another_vault_is_refused(world: World, tmp_path: Path) -> None:
    """A cursor file written for another chain or vault stops the watcher at start."""
    cursor = tmp_path / "watcher.json"
    cursor.write_text(json.dumps({"chain_id": 1, "vault": world.deployment.vault, "next_block": 5}))
    b = bridge(world)
    with pytest.raises(WatcherError, match="cursor of vault"):
        DepositWatcher(
            world.vault,
            world.deployment,
            b.network.submit,
            b.operator,
            LEDGER_CHAIN_ID,
            cursor_path=cursor,
        )


def test_a_deposit_the_ledger_refuses_stops_the_watcher_with_the_cursor_unmoved(
    world: World, tmp_path: Path
) -> None:
    """A ledger that refuses a deposit (here: a wrong operator key) leaves the cursor alone."""
    cursor = tmp_path / "watcher.json"
    b = bridge(world)
    wrong = DepositWatcher(
        world.vault,
        world.deployment,
        b.network.submit,
        PrivateKey.from_bytes(b"\x05" * 32),
        LEDGER_CHAIN_ID,
        confirmations=1,
        cursor_path=cursor,
    )
    b.deposit(world.users[0], Asset.BLACK, BLACK)
    with pytest.raises(WatcherError, match="refused by the ledger"):
        wrong.poll()
    assert not cursor.exists()
    assert b.available(world.users[0], Asset.BLACK) == 0
    assert len(b.watcher.poll()) == 1

"""The ledger's side of epoch settlement: withdrawal totals read from the log, and the
SettleEpoch record, strictly in epoch order, operator only, audited like any command."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from protocol.application import Network, Unauthorized
from protocol.audit import audit_lines
from protocol.errors import InvalidTransition
from protocol.log import EventLog, write_export
from protocol.settlement import SETTLEMENTS_ID, Settlements, withdrawals_from_log
from protocol.storage import memory_storage
from tests.protocol.compute_world import BLACK, World

TOKENS = {"blackToken": "0x" + "11" * 20, "usdToken": "0x" + "22" * 20}


@pytest.fixture
def world() -> Iterator[World]:
    app = Network(memory_storage())
    yield World(app)
    app.close()


def settle(w: World, epoch: int, **changes: object) -> object:
    log = EventLog(w.app)
    log.sync()
    fields = {
        "epoch": epoch,
        "root": "0x" + f"{epoch:064x}",
        "logSize": log.size,
        "logRoot": "0x" + log.root().hex(),
        **TOKENS,
        "chainRef": f"31337:0x{epoch:064x}",
    }
    fields.update(changes)
    return w.submit(w.operator, "SettleEpoch", **fields)


def leaves(w: World) -> list[dict[str, object]]:
    log = EventLog(w.app)
    log.sync()
    return list(log.leaves())


def test_withdrawal_totals_come_from_the_log_alone(world: World) -> None:
    """Requests and finalizations are summed per account and asset from the posting sets."""
    alice, bob = world.providers[0], world.providers[1]
    world.fund(alice, 10 * BLACK)
    world.fund(bob, 5_000_000, "USD")
    world.submit(alice, "WithdrawalRequest", asset="BLACK", amount=3 * BLACK)
    world.submit(alice, "WithdrawalRequest", asset="BLACK", amount=1 * BLACK)
    world.submit(bob, "WithdrawalRequest", asset="USD", amount=2_000_000)
    middle = len(leaves(world))
    world.submit(
        world.operator,
        "WithdrawalFinalize",
        account=alice.address,
        asset="BLACK",
        amount=3 * BLACK,
        chainRef="31337:epoch:1",
    )
    totals = withdrawals_from_log(leaves(world))
    assert totals.requested == {
        (alice.address, "BLACK"): 4 * BLACK,
        (bob.address, "USD"): 2_000_000,
    }
    assert totals.finalized == {(alice.address, "BLACK"): 3 * BLACK}
    assert totals.pending() == {(alice.address, "BLACK"): BLACK, (bob.address, "USD"): 2_000_000}
    assert withdrawals_from_log(leaves(world), size=middle).finalized == {}


def test_epochs_are_recorded_in_order_and_a_gap_or_repeat_is_refused(world: World) -> None:
    """Epoch 1 then 2 are recorded; 1 again or 4 is refused and changes nothing."""
    settle(world, 1)
    settle(world, 2)
    before = len(leaves(world))
    for wrong in (1, 2, 4):
        with pytest.raises(InvalidTransition, match="next epoch to settle is 3"):
            settle(world, wrong)
    assert len(leaves(world)) == before
    settlements = world.app.repository.get(SETTLEMENTS_ID)
    assert isinstance(settlements, Settlements)
    assert [e["epoch"] for e in settlements.epochs] == [1, 2]
    assert settlements.epochs[1]["tokens"] == {
        "BLACK": TOKENS["blackToken"],
        "USD": TOKENS["usdToken"],
    }


def test_only_the_operator_settles_an_epoch(world: World) -> None:
    """A SettleEpoch signed by anyone else is refused as unauthorized."""
    outsider = world.providers[2]
    log = EventLog(world.app)
    log.sync()
    with pytest.raises(Unauthorized):
        world.submit(
            outsider,
            "SettleEpoch",
            epoch=1,
            root="0x" + "ab" * 32,
            logSize=log.size,
            logRoot="0x" + log.root().hex(),
            chainRef="31337:0x" + "cd" * 32,
            **TOKENS,
        )


def test_a_log_with_settled_epochs_passes_the_audit(world: World) -> None:
    """Withdrawals, their finalization and two epoch records replay cleanly."""
    alice = world.providers[0]
    world.fund(alice, 10 * BLACK)
    world.submit(alice, "WithdrawalRequest", asset="BLACK", amount=2 * BLACK)
    world.submit(
        world.operator,
        "WithdrawalFinalize",
        account=alice.address,
        asset="BLACK",
        amount=2 * BLACK,
        chainRef="31337:epoch:1",
    )
    settle(world, 1)
    settle(world, 2)
    handle = io.BytesIO()
    write_export(world.app, world.operator, handle)
    report = audit_lines(handle.getvalue().splitlines(), workers=0)
    assert report.ok, report.errors

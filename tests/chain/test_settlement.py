"""Epoch settlement end to end on py-evm: deposits in through the watcher, withdrawals
finalized and their cumulative root posted with the log head, claims paid exactly what the
ledger says, nothing claimed twice, and a settler restarted mid-epoch finishing the job."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.anchor import check_anchor
from chain.settlement import NothingToClaim, settlement_tree
from protocol.assets import Asset
from protocol.audit import audit_lines
from protocol.log import EventLog, write_export
from protocol.settlement import withdrawals_from_log
from tests.chain.conftest import World, deploy_world, reverts
from tests.chain.ledger_world import Bridge, bridge

BLACK = 10**18


def audited(b: Bridge) -> bool:
    handle = io.BytesIO()
    write_export(b.network, b.operator, handle)
    report = audit_lines(handle.getvalue().splitlines(), workers=0)
    return report.ok


def test_deposit_settle_claim_pays_the_ledger_amount_and_anchors_the_log(world: World) -> None:
    """A withdrawal requested on the ledger is claimed on-chain, and the posted tree head
    is the log's own head at the epoch."""
    b = bridge(world)
    alice = world.users[0]
    b.deposit(alice, Asset.BLACK, 10 * BLACK)
    b.watcher.poll()
    b.request_withdrawal(alice, Asset.BLACK, 4 * BLACK)
    report = b.settle()
    assert report.epoch == 1 and report.finalized == {"BLACK": 4 * BLACK}
    head = world.distributor.head()
    log = EventLog(b.network)
    log.sync()
    assert head.log_size == report.log_size and head.log_root == log.root_at(head.log_size)
    before = world.black.balance_of(alice.address)
    claim = b.claim(alice, Asset.BLACK)
    assert claim.amount == 4 * BLACK
    assert world.black.balance_of(alice.address) - before == 4 * BLACK
    assert b.available(alice, Asset.BLACK) == 6 * BLACK
    with pytest.raises(NothingToClaim):
        b.claim_of(alice, Asset.BLACK)
    assert audited(b)


def test_a_second_epoch_pays_only_the_difference_and_a_replayed_claim_reverts(
    world: World,
) -> None:
    """Cumulative amounts: epoch 2 pays what was finalized since; an old proof reverts."""
    b = bridge(world)
    alice = world.users[0]
    b.deposit(alice, Asset.USD, 50_000_000)
    b.watcher.poll()
    b.request_withdrawal(alice, Asset.USD, 10_000_000)
    b.settle()
    first = b.claim(alice, Asset.USD)
    b.request_withdrawal(alice, Asset.USD, 15_000_000)
    assert b.settle().epoch == 2
    with reverts("WrongEpoch"):
        world.distributor.claim(
            first.epoch,
            alice.address,
            first.token,
            first.cumulative,
            first.proof,
            sender=world.sender(alice),
        )
    second = b.claim(alice, Asset.USD)
    assert (second.cumulative, second.amount) == (25_000_000, 15_000_000)
    assert world.usd.balance_of(alice.address) == 25_000_000
    assert audited(b)


def test_an_epoch_without_withdrawals_anchors_the_log_with_the_zero_root(world: World) -> None:
    """Nothing finalized yet: the zero root is posted and nothing can be claimed."""
    b = bridge(world)
    b.deposit(world.users[0], Asset.BLACK, BLACK)
    b.watcher.poll()
    report = b.settle()
    assert report.root == "0x" + "00" * 32 and report.accounts == 0
    with pytest.raises(NothingToClaim):
        b.claim_of(world.users[0], Asset.BLACK)


def test_a_settler_stopped_after_posting_records_the_posted_epoch(world: World) -> None:
    """Root posted, ledger record missing: the next settle records it instead of posting."""
    b = bridge(world)
    alice = world.users[0]
    b.deposit(alice, Asset.BLACK, 3 * BLACK)
    b.watcher.poll()
    b.request_withdrawal(alice, Asset.BLACK, BLACK)
    real_record = b.settler._record
    b.settler._record = lambda *args: None  # type: ignore[method-assign]
    posted = b.settle()
    b.settler._record = real_record  # type: ignore[method-assign]
    assert b.settler.last_recorded_epoch() == 0 and world.distributor.epoch() == 1
    recovered = b.settle()
    assert recovered.recovered and recovered.epoch == 1 and recovered.root == posted.root
    assert b.settler.last_recorded_epoch() == 1
    assert b.claim(alice, Asset.BLACK).amount == BLACK
    assert audited(b)


def test_a_tampered_log_prefix_gives_no_proof(world: World) -> None:
    """A claimant whose log differs from the operator's finds the roots differ and stops."""
    b = bridge(world)
    alice, bob = world.users[0], world.users[1]
    for user in (alice, bob):
        b.deposit(user, Asset.BLACK, 2 * BLACK)
    b.watcher.poll()
    b.request_withdrawal(alice, Asset.BLACK, BLACK)
    b.request_withdrawal(bob, Asset.BLACK, BLACK)
    b.settle()
    leaves = b.leaves()
    size = world.distributor.head().log_size
    forged = [leaf for leaf in leaves[:size] if not _finalizes(leaf, bob.address)]
    tree = settlement_tree(withdrawals_from_log(forged), world.deployment)
    assert tree is not None and tree.root != "0x" + world.distributor.head().root.hex()


def _finalizes(leaf: dict[str, object], account: str) -> bool:
    if leaf["type"] != "Receipt.Accepted":
        return False
    data = leaf["data"]
    assert isinstance(data, dict)
    return data["kind"] == "WithdrawalFinalize" and data["message"]["account"] == account


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["deposit", "withdraw", "settle", "claim"]),
            st.integers(0, 2),
            st.sampled_from([Asset.BLACK, Asset.USD]),
            st.integers(1, 5_000_000),
        ),
        min_size=1,
        max_size=14,
    )
)
def test_random_deposits_settlements_and_claims_match_the_ledger(
    steps: list[tuple[str, int, Asset, int]],
) -> None:
    """Whatever the order, claims never exceed deposits per token and every account's
    claimed total equals what the ledger finalized for it as of the current epoch."""
    world = _fresh_world()
    b = bridge(world)
    deposited = {Asset.BLACK: 0, Asset.USD: 0}
    for action, who, asset, amount in steps:
        user = world.users[who]
        if action == "deposit":
            b.deposit(user, asset, amount)
            b.watcher.poll()
            deposited[asset] += amount
        elif action == "withdraw":
            available = b.available(user, asset)
            if available:
                b.request_withdrawal(user, asset, min(amount, available))
        elif action == "settle":
            b.settle()
        else:
            with contextlib.suppress(NothingToClaim):
                b.claim(user, asset)
    if world.distributor.epoch() == 0:
        return
    size = world.distributor.head().log_size
    finalized = withdrawals_from_log(b.leaves(), size).finalized
    for asset, token in ((Asset.BLACK, world.black), (Asset.USD, world.usd)):
        claimed_total = 0
        for user in world.users[:3]:
            claimed = world.distributor.claimed(user.address, token.address)
            assert claimed <= finalized.get((user.address, asset.value), 0)
            claimed_total += claimed
        assert claimed_total <= deposited[asset]
        assert token.balance_of(world.vault.address) == deposited[asset] - claimed_total
    for user in world.users[:3]:
        for asset, token in ((Asset.BLACK, world.black), (Asset.USD, world.usd)):
            with contextlib.suppress(NothingToClaim):
                b.claim(user, asset)
            assert world.distributor.claimed(user.address, token.address) == finalized.get(
                (user.address, asset.value), 0
            )
    assert audited(b)


_WORLD: list[World] = []


def _fresh_world() -> World:
    """A deployed chain rolled back to its fresh state (deploying anew costs a second)."""
    from chain.evm import ethereum_tester

    if not _WORLD:
        world = deploy_world()
        _WORLD.append(world)
        _WORLD_SNAPSHOT.append(ethereum_tester(world.w3).take_snapshot())
    world = _WORLD[0]
    tester = ethereum_tester(world.w3)
    tester.revert_to_snapshot(_WORLD_SNAPSHOT[0])
    _WORLD_SNAPSHOT[0] = tester.take_snapshot()
    return world


_WORLD_SNAPSHOT: list[object] = []


def test_the_anchor_check_accepts_the_operators_log_and_refuses_a_forked_one(
    world: World,
) -> None:
    """Two posted epochs match the exported log; a log missing one withdrawal does not."""
    b = bridge(world)
    alice, bob = world.users[0], world.users[1]
    for user in (alice, bob):
        b.deposit(user, Asset.BLACK, 3 * BLACK)
    b.watcher.poll()
    b.request_withdrawal(alice, Asset.BLACK, BLACK)
    b.settle()
    b.request_withdrawal(bob, Asset.BLACK, 2 * BLACK)
    b.settle()
    handle = io.BytesIO()
    write_export(b.network, b.operator, handle)
    lines = handle.getvalue().splitlines()
    report = check_anchor(lines, world.distributor, world.deployment)
    assert report.ok, report.errors
    assert report.epochs == [1, 2]
    forked = [
        line
        for line in lines
        if b"WithdrawalFinalize" not in line or bob.address.encode() not in line
    ]
    assert len(forked) < len(lines)
    broken = check_anchor(forked, world.distributor, world.deployment)
    assert not broken.ok and any("epoch 2" in error for error in broken.errors)

"""The exported event log and the auditor's replay: honest logs pass, every forgery is named."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import canonical, merkle
from protocol.application import Network
from protocol.audit import audit_lines
from protocol.errors import InvalidInput, LedgerCorrupted
from protocol.keys import PrivateKey
from protocol.ledger import Account
from protocol.log import EventLog, export_line, sign_tree_head, tree_head_line, write_export
from protocol.storage import Storage
from tests.protocol.conftest import CHAIN_ID, Sign, deposit, key_from_int


def build_history(
    app: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    deposit(app, operator, alice.address, 1_000)
    deposit(app, operator, bob.address, 500, asset="USD")
    app.submit(sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=100, memo="a"))
    app.submit(sign(alice, "EscrowLock", job="j1", asset="BLACK", amount=300))
    app.submit(
        sign(
            operator,
            "EscrowRelease",
            payer=alice.address,
            job="j1",
            asset="BLACK",
            payouts=[{"account": bob.address, "amount": 250}],
            fee=20,
        )
    )
    app.submit(sign(bob, "Stake", asset="BLACK", amount=200))
    app.submit(
        sign(
            operator,
            "Slash",
            account=bob.address,
            asset="BLACK",
            amount=50,
            beneficiary=alice.address,
            bounty=25,
            reason="fraud",
        )
    )
    app.submit(sign(bob, "WithdrawalRequest", asset="USD", amount=100))
    app.submit(
        sign(
            operator,
            "WithdrawalFinalize",
            account=bob.address,
            asset="USD",
            amount=100,
            chainRef="31337:0x01:0",
        )
    )


def export(app: Network, operator: PrivateKey) -> list[bytes]:
    handle = io.BytesIO()
    write_export(app, operator, handle)
    return handle.getvalue().splitlines()


@pytest.fixture
def exported(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> list[bytes]:
    build_history(network, operator, alice, bob, sign)
    return export(network, operator)


def position_of(lines: list[bytes], type_name: str, nth: int = 0) -> int:
    hits = [i for i, line in enumerate(lines) if f'"type":"{type_name}"'.encode() in line]
    return hits[nth]


def rewrite(line: bytes, change: object) -> bytes:
    """Apply `change` to the event of an export line and recompute its leaf hash, as a
    careful forger would."""
    event = json.loads(line)["event"]
    change(event)  # type: ignore[operator]
    return export_line(event)[0]


def test_honest_export_passes_with_every_signature_checked(
    exported: list[bytes], network: Network
) -> None:
    """An untouched export replays cleanly, checks every command's signature, matches the tree."""
    report = audit_lines(exported, workers=0)
    assert report.ok, report.error
    assert report.commands == 9 and report.signatures_checked == 9
    assert report.root == _live_root(network)
    assert report.totals["USD"] == {
        "deposits": 500,
        "withdrawals_finalized": 100,
        "balances": 400,
        "reserve": 400,
    }


def _live_root(app: Network) -> bytes:
    log = EventLog(app)
    log.sync()
    return log.root()


def test_audit_with_worker_processes_agrees_with_inline_audit(exported: list[bytes]) -> None:
    """Checking signatures in worker processes gives the same report as checking them inline."""
    inline, parallel = audit_lines(exported, workers=0), audit_lines(exported, workers=2)
    assert parallel.ok and inline.to_json() | {
        "seconds": 0,
        "events_per_second": 0,
    } == parallel.to_json() | {"seconds": 0, "events_per_second": 0}


def test_changed_amount_is_named_at_its_line(exported: list[bytes]) -> None:
    """Raising an amount in a posting, even with its leaf hash recomputed, fails at that line."""
    victim = position_of(exported, "Account.Posted", 3)
    exported[victim] = rewrite(
        exported[victim], lambda e: e["data"]["legs"][0].__setitem__(4, 10**9)
    )
    report = audit_lines(exported, workers=0)
    assert report.error is not None and report.error.position == victim


def test_changed_line_without_rehash_is_named_by_its_leaf_hash(exported: list[bytes]) -> None:
    """A byte changed inside a line that keeps its old leaf hash fails the leaf hash check there."""
    victim = position_of(exported, "Account.Opened", 1)
    exported[victim] = exported[victim].replace(b'"version":1', b'"version":1 ', 1)
    report = audit_lines(exported, workers=2)
    assert report.error is not None and report.error.position == victim
    assert "leaf hash" in report.error.reason


def test_dropped_line_is_named(exported: list[bytes]) -> None:
    """Removing a line makes the next line's position disagree with its place."""
    victim = position_of(exported, "NonceUse.Used", 2)
    del exported[victim]
    report = audit_lines(exported, workers=0)
    assert report.error is not None and report.error.position == victim


def test_inserted_line_is_named(exported: list[bytes]) -> None:
    """A duplicated line inserted into the log fails where it was inserted."""
    exported.insert(5, exported[4])
    report = audit_lines(exported, workers=0)
    assert report.error is not None and report.error.position == 5


def test_reordered_lines_are_named(exported: list[bytes]) -> None:
    """Swapping two lines fails at the first of them."""
    exported[6], exported[9] = exported[9], exported[6]
    report = audit_lines(exported, workers=0)
    assert report.error is not None and report.error.position == 6


def test_forged_signature_is_named(exported: list[bytes]) -> None:
    """A receipt whose signature was replaced (and leaf hash recomputed) fails at that receipt."""
    victim = position_of(exported, "Receipt.Accepted", 4)
    forger = key_from_int(0xBAD)
    exported[victim] = rewrite(
        exported[victim],
        lambda e: e["data"].__setitem__("signature", "0x" + forger.sign_digest(b"\x11" * 32).hex()),
    )
    report = audit_lines(exported, workers=2)
    assert report.error is not None and report.error.position == victim
    assert "signature" in report.error.reason or "recovers" in report.error.reason


def test_posting_that_differs_from_the_signed_command_is_named(exported: list[bytes]) -> None:
    """A receipt whose recorded legs were redirected to another account fails even if the
    account events agree with it: the legs must be exactly what the signature covers."""
    victim = position_of(exported, "Receipt.Accepted", 3)
    thief = key_from_int(0x7E1F).address

    def redirect(event: dict[str, object]) -> None:
        legs = event["data"]["legs"]  # type: ignore[index]
        legs[1][0] = thief  # type: ignore[index]

    exported[victim] = rewrite(exported[victim], redirect)
    report = audit_lines(exported, workers=0)
    assert report.error is not None and report.error.position == victim


def test_forged_tree_head_is_refused(exported: list[bytes]) -> None:
    """A tree head signed by someone other than the operator fails the audit at the log's end."""
    head = json.loads(exported[-1])["tree_head"]
    impostor = key_from_int(0x1234)
    exported[-1] = tree_head_line(
        sign_tree_head(
            impostor, CHAIN_ID, head["size"], bytes.fromhex(head["root"][2:]), head["timestamp"]
        )
    )
    report = audit_lines(exported, workers=0)
    assert report.error is not None and report.error.position == len(exported) - 1
    assert "tree head" in report.error.reason


def test_tree_head_over_another_root_is_refused(
    exported: list[bytes], operator: PrivateKey
) -> None:
    """A genuine operator signature over the wrong root fails the root comparison."""
    head = json.loads(exported[-1])["tree_head"]
    exported[-1] = tree_head_line(
        sign_tree_head(operator, CHAIN_ID, head["size"], b"\x00" * 32, head["timestamp"])
    )
    report = audit_lines(exported, workers=0)
    assert report.error is not None and "root" in report.error.reason


def test_truncated_log_with_its_tree_head_is_refused(exported: list[bytes]) -> None:
    """Dropping the last events leaves a tree head that covers more than the log."""
    del exported[-3:-1]
    report = audit_lines(exported, workers=0)
    assert report.error is not None


def test_missing_tree_head_is_refused(exported: list[bytes]) -> None:
    """An export must end with a signed tree head."""
    report = audit_lines(exported[:-1], workers=0)
    assert report.error is not None and "tree head" in report.error.reason


def test_leaves_are_canonical_json_of_the_documented_shape(exported: list[bytes]) -> None:
    """Each event line is canonical JSON: the leaf under "event" and its RFC 6962 leaf hash."""
    for index, line in enumerate(exported[:-1]):
        record = json.loads(line)
        assert canonical.encode(record) == line
        assert set(record["event"]) == {"index", "type", "id", "version", "timestamp", "data"}
        assert record["event"]["index"] == index
        assert (
            record["leaf_hash"] == "0x" + merkle.leaf_hash(canonical.encode(record["event"])).hex()
        )


def test_live_tree_proves_inclusion_and_consistency(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """The log's tree gives inclusion proofs for its events and consistency proofs as it grows."""
    build_history(network, operator, alice, bob, sign)
    log = EventLog(network)
    old_size = log.sync()
    old_root = log.root()
    deposit(network, operator, alice.address, 1)
    size = log.sync()
    assert size > old_size
    merkle.verify_consistency(old_size, size, log.consistency_proof(old_size), old_root, log.root())
    for index in (0, old_size - 1, size - 1):
        merkle.verify_inclusion_from_hash(
            log.leaf_hashes[index], index, size, log.inclusion_proof(index), log.root()
        )


class TestAnyChangeIsCaught:
    """Property: whatever single change is made to an export, the audit fails and never crashes."""

    @pytest.fixture(scope="class")
    @staticmethod
    def honest(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
        from protocol.storage import sqlite_storage

        operator, alice, bob = key_from_int(0xB1AC7), key_from_int(0xA11CE), key_from_int(0xB0B)
        app = Network(sqlite_storage(tmp_path_factory.mktemp("honest")))
        app.initialize(CHAIN_ID, operator.address)
        from tests.protocol.conftest import make_command

        build_history(app, operator, alice, bob, make_command)
        lines = export(app, operator)
        app.close()
        return lines

    @given(data=st.data())
    @settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_flipped_byte_anywhere_fails_the_audit(
        self, honest: list[bytes], data: st.DataObject
    ) -> None:
        """Changing one byte of any line (event or tree head) fails the audit, without raising."""
        lines = list(honest)
        row = data.draw(st.integers(0, len(lines) - 1), label="line")
        column = data.draw(st.integers(0, len(lines[row]) - 1), label="byte")
        replacement = data.draw(st.integers(0, 255).filter(lambda b: b != lines[row][column]))
        lines[row] = lines[row][:column] + bytes([replacement]) + lines[row][column + 1 :]
        report = audit_lines(lines, workers=0)
        assert report.error is not None
        assert report.error.position <= row or report.error.position == len(honest) - 1

    @given(data=st.data())
    @settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_rehashed_value_change_fails_the_audit(
        self, honest: list[bytes], data: st.DataObject
    ) -> None:
        """Changing any value inside an event, with its leaf hash recomputed, fails the audit."""
        lines = list(honest)
        row = data.draw(st.integers(0, len(lines) - 2), label="line")
        event = json.loads(lines[row])["event"]
        paths = list(_scalar_paths(event))
        path = data.draw(st.sampled_from(paths), label="path")
        old = _get(event, path)
        new = data.draw(
            st.one_of(
                st.integers(-(2**70), 2**70), st.text(max_size=8), st.booleans(), st.none()
            ).filter(lambda v: v != old or type(v) is not type(old)),
            label="value",
        )
        _set(event, path, new)
        lines[row] = export_line(event)[0]
        report = audit_lines(lines, workers=0)
        assert report.error is not None


def _scalar_paths(value: object, prefix: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _scalar_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _scalar_paths(item, (*prefix, i))
    else:
        yield prefix


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _set(value: Any, path: tuple[Any, ...], new: object) -> None:
    for step in path[:-1]:
        value = value[step]
    value[path[-1]] = new


def test_event_forged_into_the_store_is_refused_on_read_and_by_the_audit(
    storage: Storage, network: Network, operator: PrivateKey, alice: PrivateKey
) -> None:
    """An overdraft written straight into the database fails reads loudly, and the audit there."""
    deposit(network, operator, alice.address, 10)
    account = network.account(alice.address)
    assert account is not None
    forged = Account.Posted(  # type: ignore[attr-defined]
        originator_id=account.id,
        originator_version=account.version + 1,
        timestamp=Account.Posted.create_timestamp(),  # type: ignore[attr-defined]
        posting_id="forged",
        legs=[[alice.address, "BLACK", "available", "D", 11]],
    )
    network.recorder.insert_events([network.mapper.to_stored_event(forged)])
    reopened = Network(storage)
    try:
        with pytest.raises(LedgerCorrupted):
            reopened.balance(alice.address, "BLACK")
        lines = list(EventLog(reopened).lines())
    finally:
        reopened.close()
    report = audit_lines(lines, workers=0, require_tree_head=False)
    assert report.error is not None and report.error.position == len(lines) - 1


@pytest.mark.parametrize("type_name", ["Account.Event", "Account.Created", "Receipt.Created"])
def test_event_types_the_domain_never_emits_are_refused(
    exported: list[bytes], type_name: str
) -> None:
    """A line naming one of eventsourcing's base event classes fails at that line."""
    victim = position_of(exported, "Account.Posted", 2)
    exported[victim] = rewrite(exported[victim], lambda e: e.__setitem__("type", type_name))
    report = audit_lines(exported, workers=0)
    assert report.error is not None and report.error.position == victim


def test_stored_event_with_a_foreign_topic_is_never_resolved(
    network: Network, operator: PrivateKey, alice: PrivateKey
) -> None:
    """Reading the log refuses a stored topic that is not a ledger event rather than import it."""
    from eventsourcing.persistence import StoredEvent

    deposit(network, operator, alice.address, 1)
    hostile = StoredEvent(
        originator_id=uuid.uuid4(),
        originator_version=1,
        topic="os:system",
        state=b'{"command":"true"}',
    )
    network.recorder.insert_events([hostile])
    with pytest.raises(InvalidInput, match="os:system"):
        list(EventLog(network).leaves())

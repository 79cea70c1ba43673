"""Properties of the ledger under random workloads of every command kind."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import simulate
from protocol import canonical
from protocol.application import Network
from protocol.assets import Asset
from protocol.audit import Replayer, audit_lines
from protocol.commands import LEDGER_KINDS
from protocol.errors import InsufficientFunds, InvalidInput, UnbalancedPosting
from protocol.ledger import AVAILABLE, RESERVE, Account, check_balanced, credit, debit
from protocol.log import EventLog, split_export_line
from tests.protocol.conftest import CHAIN_ID, key_from_int

OPERATOR = key_from_int(0xB1AC7)


def replay(app: Network) -> tuple[bool, str, dict[str, dict[str, int]]]:
    """Audit the store's log, and replay it once more to read the replayed balances."""
    lines = list(EventLog(app).lines())
    report = audit_lines(lines, workers=0, require_tree_head=False)
    replayer = Replayer()
    for line in lines:
        parts = split_export_line(line)
        assert parts is not None
        replayer.apply(canonical.decode(parts[0]))
    return report.ok, str(report.error), replayer.balances()


@given(seed=st.integers(0, 2**32), accounts=st.integers(2, 6), operations=st.integers(1, 120))
@settings(max_examples=25)
def test_random_workloads_keep_every_invariant(seed: int, accounts: int, operations: int) -> None:
    """Any mix of commands audits clean, and the replayed balances equal the live ones."""
    app = Network()
    app.initialize(CHAIN_ID, OPERATOR.address)
    workload = simulate.Workload(OPERATOR, CHAIN_ID, accounts, seed=seed)
    report = simulate.run(app, workload, operations, batch=16)
    assert report.accepted + sum(report.refused.values()) == report.commands
    ok, error, balances = replay(app)
    assert ok, error
    for name, replayed in balances.items():
        live = app.account(name)
        assert isinstance(live, Account) and live.balances == replayed
        assert all(value > 0 for value in replayed.values())
    totals: dict[str, int] = {}
    for replayed in balances.values():
        for key, value in replayed.items():
            asset, bucket = key.split("/", 1)
            totals[asset] = totals.get(asset, 0) + (-value if bucket == RESERVE else value)
    assert all(total == 0 for total in totals.values())


def test_every_command_kind_is_exercised_by_the_simulation() -> None:
    """The simulated mix covers every command kind the ledger has."""
    assert set(simulate.MIX) == set(LEDGER_KINDS)


@pytest.mark.parametrize(
    ("legs", "error"),
    [
        ([], InvalidInput),
        (
            [debit("a", Asset.BLACK, AVAILABLE, 5), credit("b", Asset.BLACK, AVAILABLE, 4)],
            UnbalancedPosting,
        ),
        (
            [debit("a", Asset.BLACK, AVAILABLE, 5), credit("b", Asset.USD, AVAILABLE, 5)],
            UnbalancedPosting,
        ),
        (
            [debit("a", Asset.BLACK, AVAILABLE, 0), credit("b", Asset.BLACK, AVAILABLE, 0)],
            InvalidInput,
        ),
        (
            [debit("a", Asset.BLACK, AVAILABLE, 1), credit("b", Asset.BLACK, AVAILABLE, 1)] * 33,
            InvalidInput,
        ),
    ],
)
def test_unbalanced_or_degenerate_posting_sets_are_refused(
    legs: list[object], error: type[Exception]
) -> None:
    """Posting sets that do not balance per asset, are empty, zero or oversized are refused."""
    with pytest.raises(error):
        check_balanced(legs)  # type: ignore[arg-type]


def test_an_account_never_posts_below_zero() -> None:
    """Account.post refuses a leg that would take a bucket below zero, and records nothing."""
    account = Account(name="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    account.collect_events()
    with pytest.raises(InsufficientFunds):
        account.post("p1", [debit(account.name, Asset.USD, AVAILABLE, 1)])
    assert account.collect_events() == [] and account.balances == {}

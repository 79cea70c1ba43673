"""The Network application: commands, their checks, and what they record."""

from __future__ import annotations

import time

import pytest

from protocol.application import Network, NotInitialized, Unauthorized
from protocol.commands import SignedCommand
from protocol.errors import (
    CommandExpired,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    InvalidSignature,
    NonceReplayed,
    WrongChainId,
    WrongSigner,
)
from protocol.keys import PrivateKey
from protocol.log import EventLog
from protocol.storage import Storage
from tests.protocol.conftest import CHAIN_ID, Sign, deposit

BLACK = 10**18


def log_size(app: Network) -> int:
    return EventLog(app).sync()


def test_deposit_credits_the_account_and_the_vault_reserve(
    network: Network, operator: PrivateKey, alice: PrivateKey
) -> None:
    """A deposit debits the vault reserve and credits the depositor's available bucket."""
    deposit(network, operator, alice.address, 5 * BLACK)
    assert network.balance(alice.address, "BLACK") == 5 * BLACK
    assert network.balance("vault", "BLACK", "reserve") == 5 * BLACK


def test_transfer_moves_available_funds(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """A transfer debits the signer and credits the recipient by the same amount."""
    deposit(network, operator, alice.address, 5 * BLACK)
    result = network.submit(
        sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=2 * BLACK, memo="rent")
    )
    assert result.kind == "Transfer" and not result.duplicate
    assert network.balance(alice.address, "BLACK") == 3 * BLACK
    assert network.balance(bob.address, "BLACK") == 2 * BLACK


def test_overdraft_is_refused_and_records_nothing(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """Spending more than is available raises InsufficientFunds and leaves the log unchanged."""
    deposit(network, operator, alice.address, BLACK)
    before = log_size(network)
    with pytest.raises(InsufficientFunds) as caught:
        network.submit(
            sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=BLACK + 1, memo="")
        )
    assert (caught.value.needed, caught.value.available) == (BLACK + 1, BLACK)
    assert log_size(network) == before
    assert network.balance(alice.address, "BLACK") == BLACK


def test_escrow_lock_release_and_refund_move_the_job_budget(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """A job budget is locked by the payer, paid out with a treasury fee, and the rest refunded."""
    deposit(network, operator, alice.address, 100, asset="USD")
    network.submit(sign(alice, "EscrowLock", job="job-1", asset="USD", amount=60))
    assert network.balance(alice.address, "USD", "escrow:job-1") == 60
    network.submit(
        sign(
            operator,
            "EscrowRelease",
            payer=alice.address,
            job="job-1",
            asset="USD",
            payouts=[{"account": bob.address, "amount": 45}],
            fee=5,
        )
    )
    network.submit(
        sign(operator, "EscrowRefund", payer=alice.address, job="job-1", asset="USD", amount=10)
    )
    assert network.balance(alice.address, "USD", "escrow:job-1") == 0
    assert network.balance(alice.address, "USD") == 50
    assert network.balance(bob.address, "USD") == 45
    assert network.balance("treasury", "USD", "treasury") == 5


def test_stake_unstake_and_slash_with_bounty(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """Stake moves into the stake bucket; a slash pays the bounty, the rest to the treasury."""
    deposit(network, operator, alice.address, 100)
    network.submit(sign(alice, "Stake", asset="BLACK", amount=80))
    network.submit(sign(alice, "Unstake", asset="BLACK", amount=20))
    network.submit(
        sign(
            operator,
            "Slash",
            account=alice.address,
            asset="BLACK",
            amount=30,
            beneficiary=bob.address,
            bounty=10,
            reason="fraud",
        )
    )
    assert network.balance(alice.address, "BLACK", "stake") == 30
    assert network.balance(alice.address, "BLACK") == 40
    assert network.balance(bob.address, "BLACK") == 10
    assert network.balance("treasury", "BLACK", "treasury") == 20


def test_slash_cannot_take_more_than_the_stake(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """Slashing beyond the staked amount is refused like any overdraft."""
    deposit(network, operator, alice.address, 100)
    network.submit(sign(alice, "Stake", asset="BLACK", amount=10))
    with pytest.raises(InsufficientFunds):
        network.submit(
            sign(
                operator,
                "Slash",
                account=alice.address,
                asset="BLACK",
                amount=11,
                beneficiary=bob.address,
                bounty=0,
                reason="fraud",
            )
        )


def test_fee_and_withdrawal_lifecycle_reduce_the_reserve(
    network: Network, operator: PrivateKey, alice: PrivateKey, sign: Sign
) -> None:
    """A fee goes to the treasury; a finalized withdrawal leaves the ledger and the reserve."""
    deposit(network, operator, alice.address, 100)
    network.submit(
        sign(operator, "Fee", account=alice.address, asset="BLACK", amount=3, reason="listing")
    )
    network.submit(sign(alice, "WithdrawalRequest", asset="BLACK", amount=50))
    assert network.balance(alice.address, "BLACK", "pending_withdrawal") == 50
    network.submit(
        sign(
            operator,
            "WithdrawalFinalize",
            account=alice.address,
            asset="BLACK",
            amount=50,
            chainRef=f"{CHAIN_ID}:0x{'ab' * 32}:3",
        )
    )
    assert network.balance(alice.address, "BLACK", "pending_withdrawal") == 0
    assert network.balance(alice.address, "BLACK") == 47
    assert network.balance("vault", "BLACK", "reserve") == 50


def test_retry_with_same_client_id_returns_the_first_result(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """Re-sending a command, even re-signed with a new nonce, returns the first result only."""
    deposit(network, operator, alice.address, 100)
    command = sign(
        alice, "Transfer", to=bob.address, asset="BLACK", amount=7, memo="", clientId="pay-7"
    )
    first = network.submit(command)
    size = log_size(network)
    again = network.submit(command)
    resigned = network.submit(
        sign(
            alice,
            "Transfer",
            to=bob.address,
            asset="BLACK",
            amount=7,
            memo="",
            clientId="pay-7",
            nonce=999_999,
        )
    )
    assert again.to_json() == first.to_json() == resigned.to_json()
    assert again.duplicate and resigned.duplicate
    assert log_size(network) == size
    assert network.balance(bob.address, "BLACK") == 7


def test_same_client_id_with_another_payload_is_a_conflict(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """A client id reused for a different amount raises IdempotencyConflict."""
    deposit(network, operator, alice.address, 100)
    network.submit(
        sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=7, memo="", clientId="pay-x")
    )
    with pytest.raises(IdempotencyConflict):
        network.submit(
            sign(
                alice,
                "Transfer",
                to=bob.address,
                asset="BLACK",
                amount=8,
                memo="",
                clientId="pay-x",
            )
        )


def test_replayed_nonce_is_refused(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """A second command with a nonce already spent by the signer raises NonceReplayed."""
    deposit(network, operator, alice.address, 100)
    network.submit(
        sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=1, memo="", nonce=42)
    )
    with pytest.raises(NonceReplayed) as caught:
        network.submit(
            sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=1, memo="", nonce=42)
        )
    assert caught.value.nonce == 42


def test_expired_command_is_refused(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """A command presented after its expiry raises CommandExpired."""
    deposit(network, operator, alice.address, 100)
    command = sign(
        alice, "Transfer", to=bob.address, asset="BLACK", amount=1, memo="", expiry=1_000
    )
    with pytest.raises(CommandExpired):
        network.submit(command, now=1_001)


def test_command_for_another_chain_is_refused(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """A command signed for another chain id raises WrongChainId, not a signature error."""
    deposit(network, operator, alice.address, 100)
    with pytest.raises(WrongChainId):
        network.submit(
            sign(alice, "Transfer", chain_id=1, to=bob.address, asset="BLACK", amount=1, memo="")
        )


def test_wrong_signer_is_refused(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """A command claiming a signer other than the key that signed it raises WrongSigner."""
    deposit(network, operator, alice.address, 100)
    command = sign(bob, "Transfer", to=operator.address, asset="BLACK", amount=1, memo="")
    forged = SignedCommand(
        command.kind, command.chain_id, alice.address, command.message, command.signature
    )
    with pytest.raises(WrongSigner) as caught:
        network.submit(forged)
    assert caught.value.recovered == bob.address


def test_altered_message_no_longer_matches_its_signature(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """Changing the amount after signing makes the signature recover to someone else."""
    deposit(network, operator, alice.address, 100)
    command = sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=1, memo="")
    altered = SignedCommand(
        command.kind,
        command.chain_id,
        command.signer,
        {**command.message, "amount": 99},
        command.signature,
    )
    with pytest.raises(WrongSigner):
        network.submit(altered)


def test_malformed_signature_is_refused(
    network: Network, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """A signature with an impossible recovery byte raises InvalidSignature."""
    command = sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=1, memo="")
    bad = SignedCommand(
        command.kind,
        command.chain_id,
        command.signer,
        command.message,
        command.signature[:64] + bytes([5]),
    )
    with pytest.raises(InvalidSignature):
        network.submit(bad)


def test_operator_commands_need_the_operator(
    network: Network, operator: PrivateKey, alice: PrivateKey, sign: Sign
) -> None:
    """A user cannot credit a deposit to themselves: only the operator may."""
    with pytest.raises(Unauthorized):
        network.submit(
            sign(
                alice,
                "Deposit",
                account=alice.address,
                asset="BLACK",
                amount=10**30,
                chainRef="31337:0x00:0",
            )
        )
    assert network.balance(alice.address, "BLACK") == 0


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"to": "0xnot-an-address", "asset": "BLACK", "amount": 1, "memo": ""}, "message.to"),
        ({"to": None, "asset": "GOLD", "amount": 1, "memo": ""}, "message.asset"),
        ({"to": None, "asset": "BLACK", "amount": 0, "memo": ""}, "message.amount"),
        ({"to": None, "asset": "BLACK", "amount": -5, "memo": ""}, "message.amount"),
        ({"to": None, "asset": "BLACK", "amount": 1, "memo": "x" * 300}, "message.memo"),
        ({"to": None, "asset": "BLACK", "amount": 1}, "message"),
    ],
)
def test_malformed_messages_are_refused_naming_the_field(
    alice: PrivateKey, bob: PrivateKey, sign: Sign, fields: dict[str, object], path: str
) -> None:
    """A client cannot even sign a malformed command: the error names the offending field."""
    if fields.get("to", "") is None:
        fields["to"] = bob.address
    with pytest.raises(InvalidInput) as caught:
        sign(alice, "Transfer", **fields)
    assert caught.value.field == path


def test_batch_applies_good_commands_and_reports_bad_ones(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """In a batch, a refused command takes its slot's error and the others still apply, in order."""
    deposit(network, operator, alice.address, 10)
    results = network.submit_many(
        [
            sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=6, memo=""),
            sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=6, memo=""),
            sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=4, memo=""),
            sign(alice, "Transfer", chain_id=5, to=bob.address, asset="BLACK", amount=1, memo=""),
        ]
    )
    assert [type(r).__name__ for r in results] == [
        "CommandResult",
        "InsufficientFunds",
        "CommandResult",
        "WrongChainId",
    ]
    assert network.balance(alice.address, "BLACK") == 0
    assert network.balance(bob.address, "BLACK") == 10


def test_balances_survive_reopening_the_store(
    storage: Storage,
    network: Network,
    operator: PrivateKey,
    alice: PrivateKey,
    bob: PrivateKey,
    sign: Sign,
) -> None:
    """A second Network on the same store rebuilds the same balances from the events."""
    deposit(network, operator, alice.address, 10)
    network.submit(sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=3, memo=""))
    reopened = Network(storage)
    try:
        assert reopened.chain_id == CHAIN_ID
        assert reopened.balances(alice.address) == {"BLACK/available": 7}
        assert reopened.balances(bob.address) == {"BLACK/available": 3}
    finally:
        reopened.close()


def test_an_uninitialized_store_refuses_commands(
    storage: Storage, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """Without a genesis record there is no chain id to check against, so nothing is accepted."""
    app = Network(storage)
    try:
        with pytest.raises(NotInitialized):
            app.submit(sign(alice, "Transfer", to=bob.address, asset="BLACK", amount=1, memo=""))
    finally:
        app.close()


def test_expiry_far_in_the_future_is_refused(
    network: Network, operator: PrivateKey, alice: PrivateKey, bob: PrivateKey, sign: Sign
) -> None:
    """Commands may not stay valid for more than the expiry horizon."""
    deposit(network, operator, alice.address, 10)
    with pytest.raises(InvalidInput):
        network.submit(
            sign(
                alice,
                "Transfer",
                to=bob.address,
                asset="BLACK",
                amount=1,
                memo="",
                expiry=int(time.time()) + 365 * 86400,
            )
        )

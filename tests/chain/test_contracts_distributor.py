"""The SettlementDistributor on py-evm: the epoch rule, the log head, claims and every way
a claim is refused, pausing and roles."""

from __future__ import annotations

import pytest
from web3 import Web3

from chain.contracts import OPERATOR_ROLE, PAUSER_ROLE, deploy_contract
from chain.errors import ContractReverted
from tests.chain.conftest import World, reverts

LOG_ROOT = Web3.keccak(text="log head")


def _stocked(world: World, amount: int) -> None:
    """Puts `amount` of USD in the Vault, as deposits by user 0."""
    world.fund(world.users[0], world.usd, amount)
    world.vault.deposit(
        world.usd.address, amount, world.users[0].address, sender=world.sender(world.users[0])
    )


def test_first_root_is_epoch_one_and_its_head_is_readable(world: World) -> None:
    """Posting epoch 1 stores its root and log head, readable in one call and as an event."""
    operator = world.sender(world.operator)
    assert world.distributor.head().epoch == 0
    receipt = world.distributor.post_root(1, b"\x01" * 32, 7, LOG_ROOT, sender=operator)
    head = world.distributor.head()
    assert (head.epoch, head.root, head.log_size, head.log_root) == (1, b"\x01" * 32, 7, LOG_ROOT)
    assert world.distributor.epoch() == 1
    assert world.distributor.root() == b"\x01" * 32
    (post,) = world.distributor.root_posts(receipt["blockNumber"], receipt["blockNumber"])
    assert (post.epoch, post.root, post.log_size, post.log_root) == (1, b"\x01" * 32, 7, LOG_ROOT)
    assert post.tx_hash == "0x" + bytes(receipt["transactionHash"]).hex()


@pytest.mark.parametrize(("epoch", "case"), [(0, "stale"), (1, "repeated"), (3, "skipped")])
def test_an_epoch_other_than_the_next_one_reverts(world: World, epoch: int, case: str) -> None:
    """After epoch 1, posting epoch 0 (stale), 1 (repeated) or 3 (skipping 2) reverts
    WrongEpoch naming the expected epoch 2."""
    operator = world.sender(world.operator)
    world.distributor.post_root(1, b"\x01" * 32, 1, LOG_ROOT, sender=operator)
    with reverts("WrongEpoch", expected=2, given=epoch):
        world.distributor.post_root(epoch, b"\x02" * 32, 2, LOG_ROOT, sender=operator)


def test_the_log_cannot_shrink(world: World) -> None:
    """A log head smaller than the current one reverts LogSizeDecreased."""
    operator = world.sender(world.operator)
    world.distributor.post_root(1, b"\x01" * 32, 10, LOG_ROOT, sender=operator)
    with reverts("LogSizeDecreased", current=10, given=9):
        world.distributor.post_root(2, b"\x02" * 32, 9, Web3.keccak(text="other"), sender=operator)


def test_a_log_head_of_the_same_size_must_keep_its_root(world: World) -> None:
    """The same log size with another root reverts LogRootChanged (a forked log); the
    same head again is accepted (no event recorded between two epochs)."""
    operator = world.sender(world.operator)
    world.distributor.post_root(1, b"\x01" * 32, 10, LOG_ROOT, sender=operator)
    forked = Web3.keccak(text="forked")
    with reverts("LogRootChanged", logSize=10, current=LOG_ROOT, given=forked):
        world.distributor.post_root(2, b"\x02" * 32, 10, forked, sender=operator)
    world.distributor.post_root(2, b"\x02" * 32, 10, LOG_ROOT, sender=operator)
    assert world.distributor.head().epoch == 2


def test_posting_a_root_needs_the_operator_role(world: World) -> None:
    """The admin and the pauser cannot post roots: AccessControlUnauthorizedAccount."""
    for account in (world.admin, world.pauser):
        with reverts(
            "AccessControlUnauthorizedAccount", account=account.address, neededRole=OPERATOR_ROLE
        ):
            world.distributor.post_root(1, b"\x01" * 32, 1, LOG_ROOT, sender=world.sender(account))


def test_claim_pays_the_cumulative_amount_to_the_account(world: World) -> None:
    """A claim with a valid proof pays the account (not the caller) from the Vault, records
    the claimed total and emits Claimed."""
    _stocked(world, 1_000)
    alice, bob, relayer = world.users[1], world.users[2], world.users[3]
    tree, _ = world.post_epoch(
        [(alice.address, world.usd.address, 300), (bob.address, world.usd.address, 200)]
    )
    receipt = world.distributor.claim(
        1, alice.address, world.usd.address, 300, tree.get_proof(0), sender=world.sender(relayer)
    )
    assert world.usd.balance_of(alice.address) == 300
    assert world.usd.balance_of(relayer.address) == 0
    assert world.usd.balance_of(world.vault.address) == 700
    assert world.distributor.claimed(alice.address, world.usd.address) == 300
    (log,) = world.distributor.claims_in(receipt)
    assert (log.account, log.token, log.epoch, log.amount, log.cumulative_amount) == (
        alice.address,
        world.usd.address,
        1,
        300,
        300,
    )
    assert world.distributor.claims(receipt["blockNumber"], receipt["blockNumber"]) == [log]


def test_second_claim_in_an_epoch_reverts_nothing_to_claim(world: World) -> None:
    """Claiming the same cumulative amount twice pays once; the second reverts NothingToClaim."""
    _stocked(world, 1_000)
    alice = world.users[1]
    tree, _ = world.post_epoch([(alice.address, world.usd.address, 300)])
    sender = world.sender(alice)
    world.distributor.claim(
        1, alice.address, world.usd.address, 300, tree.get_proof(0), sender=sender
    )
    with reverts("NothingToClaim", account=alice.address, token=world.usd.address, claimed=300):
        world.distributor.claim(
            1, alice.address, world.usd.address, 300, tree.get_proof(0), sender=sender
        )
    assert world.usd.balance_of(alice.address) == 300


def test_a_later_epoch_pays_only_the_difference(world: World) -> None:
    """With cumulative amounts 300 then 450, the second claim pays 150; a third epoch with
    no increase has nothing to claim."""
    _stocked(world, 1_000)
    alice = world.users[1]
    sender = world.sender(alice)
    first, _ = world.post_epoch([(alice.address, world.usd.address, 300)])
    world.distributor.claim(
        1, alice.address, world.usd.address, 300, first.get_proof(0), sender=sender
    )
    second, _ = world.post_epoch(
        [(alice.address, world.usd.address, 450), (world.users[2].address, world.usd.address, 1)]
    )
    receipt = world.distributor.claim(
        2, alice.address, world.usd.address, 450, second.get_proof(0), sender=sender
    )
    assert world.distributor.claims_in(receipt)[0].amount == 150
    assert world.usd.balance_of(alice.address) == 450
    third, _ = world.post_epoch([(alice.address, world.usd.address, 450)])
    with reverts("NothingToClaim", claimed=450):
        world.distributor.claim(
            3, alice.address, world.usd.address, 450, third.get_proof(0), sender=sender
        )


def test_an_account_that_skipped_epochs_claims_everything_at_once(world: World) -> None:
    """Cumulative amounts make old epochs obsolete: one claim at epoch 3 pays all of it."""
    _stocked(world, 1_000)
    alice = world.users[1]
    for total in (100, 250, 600):
        tree, _ = world.post_epoch([(alice.address, world.usd.address, total)])
    world.distributor.claim(
        3, alice.address, world.usd.address, 600, tree.get_proof(0), sender=world.sender(alice)
    )
    assert world.usd.balance_of(alice.address) == 600


def test_claims_against_a_past_epoch_revert_wrong_epoch(world: World) -> None:
    """Once epoch 2 is posted, a proof for epoch 1 reverts WrongEpoch (expected 2), even one
    that was valid, and so does a claim naming a future epoch."""
    _stocked(world, 1_000)
    alice = world.users[1]
    sender = world.sender(alice)
    old, _ = world.post_epoch([(alice.address, world.usd.address, 300)])
    world.post_epoch([(alice.address, world.usd.address, 400)])
    with reverts("WrongEpoch", expected=2, given=1):
        world.distributor.claim(
            1, alice.address, world.usd.address, 300, old.get_proof(0), sender=sender
        )
    with reverts("WrongEpoch", expected=2, given=3):
        world.distributor.claim(
            3, alice.address, world.usd.address, 300, old.get_proof(0), sender=sender
        )


def test_bad_proofs_revert_invalid_proof(world: World) -> None:
    """A larger amount, another account, a token swapped, a tampered or empty proof, and
    another leaf's proof are all refused with InvalidProof."""
    _stocked(world, 1_000)
    alice, bob = world.users[1], world.users[2]
    usd = world.usd.address
    tree, _ = world.post_epoch(
        [
            (alice.address, usd, 300),
            (bob.address, usd, 200),
            (world.users[3].address, usd, 100),
        ]
    )
    proof = tree.get_proof(0)
    tampered = [proof[0][:-2] + ("00" if proof[0][-2:] != "00" else "01"), *proof[1:]]
    cases = [
        (alice.address, usd, 301, proof),
        (bob.address, usd, 300, proof),
        (alice.address, world.black.address, 300, proof),
        (alice.address, usd, 300, tampered),
        (alice.address, usd, 300, []),
        (alice.address, usd, 300, tree.get_proof(1)),
    ]
    for account, token, amount, siblings in cases:
        with reverts("InvalidProof"):
            world.distributor.claim(1, account, token, amount, siblings, sender=world.sender(bob))
    assert world.usd.balance_of(world.vault.address) == 1_000


def test_claims_before_any_root_revert_invalid_proof(world: World) -> None:
    """Before epoch 1 the root is zero, which no proof reaches: InvalidProof."""
    with reverts("InvalidProof"):
        world.distributor.claim(
            0,
            world.users[1].address,
            world.usd.address,
            1,
            [],
            sender=world.sender(world.users[1]),
        )


def test_a_claim_the_vault_cannot_cover_reverts_with_the_token_error(world: World) -> None:
    """A root promising more than the Vault holds fails at the transfer with the token's
    ERC20InsufficientBalance, and nothing is recorded as claimed."""
    _stocked(world, 100)
    alice = world.users[1]
    tree, _ = world.post_epoch([(alice.address, world.usd.address, 101)])
    with reverts("ERC20InsufficientBalance", sender=world.vault.address, balance=100, needed=101):
        world.distributor.claim(
            1,
            alice.address,
            world.usd.address,
            101,
            tree.get_proof(0),
            sender=world.sender(alice),
        )
    assert world.distributor.claimed(alice.address, world.usd.address) == 0


def test_paused_distributor_refuses_claims_but_accepts_roots(world: World) -> None:
    """While paused, claims revert EnforcedPause but the operator can still post (to replace
    a bad root); after unpause the claim against the new root pays."""
    _stocked(world, 1_000)
    alice = world.users[1]
    pauser = world.sender(world.pauser)
    tree, _ = world.post_epoch([(alice.address, world.usd.address, 300)])
    world.distributor.pause(sender=pauser)
    assert world.distributor.paused()
    with reverts("EnforcedPause"):
        world.distributor.claim(
            1,
            alice.address,
            world.usd.address,
            300,
            tree.get_proof(0),
            sender=world.sender(alice),
        )
    fixed, _ = world.post_epoch([(alice.address, world.usd.address, 250)])
    world.distributor.unpause(sender=pauser)
    world.distributor.claim(
        2, alice.address, world.usd.address, 250, fixed.get_proof(0), sender=world.sender(alice)
    )
    assert world.usd.balance_of(alice.address) == 250


@pytest.mark.parametrize("function", ["pause", "unpause"])
def test_pausing_the_distributor_needs_the_pauser_role(world: World, function: str) -> None:
    """The admin and the operator cannot pause or unpause the distributor."""
    if function == "unpause":
        world.distributor.pause(sender=world.sender(world.pauser))
    for account in (world.admin, world.operator):
        with reverts(
            "AccessControlUnauthorizedAccount", account=account.address, neededRole=PAUSER_ROLE
        ):
            getattr(world.distributor, function)(sender=world.sender(account))


def test_a_reverting_transaction_mined_with_fixed_gas_is_reported_from_its_receipt(
    world: World,
) -> None:
    """With a fixed gas limit the failing claim is mined (status 0); the client replays it
    and raises the same custom error, naming the transaction."""
    alice = world.users[1]
    sender = world.sender(alice).with_gas_limit(200_000)
    with reverts("InvalidProof") as caught:
        world.distributor.claim(0, alice.address, world.usd.address, 5, [], sender=sender)
    tx_hash = caught.value.transaction_hash
    assert tx_hash is not None
    assert world.w3.eth.get_transaction_receipt(tx_hash)["status"] == 0


def test_distributor_needs_a_vault(world: World) -> None:
    """Deploying the distributor with the zero address as its Vault reverts ZeroAddress."""
    with pytest.raises(ContractReverted) as caught:
        deploy_contract(
            world.w3,
            "SettlementDistributor",
            [world.admin.address, "0x" + "00" * 20],
            world.sender(world.admin),
        )
    assert caught.value.error == "ZeroAddress"


def test_proofs_longer_than_any_tree_are_refused_before_sending(world: World) -> None:
    """A proof of more than 64 siblings cannot come from a real tree; the client refuses it."""
    with pytest.raises(ValueError, match="at most 64"):
        world.distributor.claim(
            0,
            world.users[1].address,
            world.usd.address,
            1,
            [b"\x00" * 32] * 65,
            sender=world.sender(world.users[1]),
        )

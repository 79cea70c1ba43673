"""The Vault on py-evm: deposits and their events, permits, the allow-list, pausing, roles,
and the distributor's allowance."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from chain.contracts import (
    DEFAULT_ADMIN_ROLE,
    PAUSER_ROLE,
    TestUSD,
    TokenStatus,
    deploy_contract,
    log_blocks_max,
)
from tests.chain.conftest import World, reverts

MAX_UINT256 = 2**256 - 1


def _new_token(world: World) -> TestUSD:
    """Another ERC-20 that the Vault has never heard of."""
    receipt = deploy_contract(world.w3, "TestUSD", [world.admin.address], world.sender(world.admin))
    assert receipt["contractAddress"] is not None
    return TestUSD(world.w3, receipt["contractAddress"])


def test_deposit_emits_one_event_naming_the_ledger_account(world: World) -> None:
    """A deposit moves the tokens into the Vault and emits one Deposited log that names the
    credited account, the token, the amount and the depositor."""
    depositor, account = world.users[0], world.users[1]
    world.fund(depositor, world.usd, 5_000_000)
    receipt = world.vault.deposit(
        world.usd.address, 5_000_000, account.address, sender=world.sender(depositor)
    )
    (log,) = world.vault.deposits_in(receipt)
    assert (log.account, log.token, log.amount, log.depositor) == (
        account.address,
        world.usd.address,
        5_000_000,
        depositor.address,
    )
    assert log.chain_id == world.w3.eth.chain_id
    assert log.chain_ref == f"{log.chain_id}:{log.tx_hash}:{log.log_index}"
    assert log.tx_hash == "0x" + bytes(receipt["transactionHash"]).hex()
    assert world.usd.balance_of(world.vault.address) == 5_000_000
    assert world.usd.balance_of(depositor.address) == 0


def test_deposits_reader_returns_every_deposit_in_chain_order(world: World) -> None:
    """`deposits(from, to)` lists the logs of a block range in (block, log index) order,
    each with a distinct chainRef."""
    depositor = world.users[0]
    world.fund(depositor, world.usd, 30)
    world.fund(depositor, world.black, 30)
    sender = world.sender(depositor)
    start = world.w3.eth.block_number + 1
    world.vault.deposit(world.usd.address, 10, world.users[1].address, sender=sender)
    world.vault.deposit(world.black.address, 20, world.users[2].address, sender=sender)
    world.vault.deposit(world.usd.address, 20, world.users[1].address, sender=sender)
    logs = world.vault.deposits(start, world.w3.eth.block_number)
    assert [(log.token, log.amount) for log in logs] == [
        (world.usd.address, 10),
        (world.black.address, 20),
        (world.usd.address, 20),
    ]
    assert len({log.chain_ref for log in logs}) == 3
    assert [log.block_number for log in logs] == sorted(log.block_number for log in logs)
    assert world.vault.deposits(0, start - 1) == []


def test_deposits_reader_refuses_bad_and_oversized_ranges(world: World) -> None:
    """A reversed block range, or one longer than `log_blocks_max`, is refused before any
    request is made."""
    with pytest.raises(ValueError, match="from_block <= to_block"):
        world.vault.deposits(5, 4)
    with pytest.raises(ValueError, match="at most"):
        world.vault.deposits(0, log_blocks_max)


def test_deposit_of_zero_reverts(world: World) -> None:
    """A deposit of zero reverts ZeroAmount."""
    with reverts("ZeroAmount"):
        world.vault.deposit(
            world.usd.address, 0, world.users[0].address, sender=world.sender(world.users[0])
        )


def test_deposit_to_the_zero_account_reverts(world: World) -> None:
    """A deposit credited to the zero address reverts ZeroAccount."""
    world.fund(world.users[0], world.usd, 10)
    with reverts("ZeroAccount"):
        world.vault.deposit(
            world.usd.address, 10, "0x" + "00" * 20, sender=world.sender(world.users[0])
        )


def test_deposit_of_an_unknown_token_reverts(world: World) -> None:
    """A token the admin never allowed is refused with TokenNotAllowed naming it."""
    other = _new_token(world)
    with reverts("TokenNotAllowed", token=other.address):
        world.vault.deposit(
            other.address, 10, world.users[0].address, sender=world.sender(world.users[0])
        )


def test_deposit_of_a_disallowed_token_reverts_but_it_stays_known(world: World) -> None:
    """Disallowing a token stops its deposits, keeps it in `tokens()` and keeps the
    distributor's allowance, so what was deposited in it can still be claimed."""
    admin = world.sender(world.admin)
    world.fund(world.users[0], world.black, 10)
    world.vault.set_token_allowed(world.black.address, False, sender=admin)
    assert world.vault.token_status(world.black.address) is TokenStatus.DISALLOWED
    with reverts("TokenNotAllowed", token=world.black.address):
        world.vault.deposit(
            world.black.address, 10, world.users[0].address, sender=world.sender(world.users[0])
        )
    assert world.black.address in world.vault.tokens()
    assert world.black.allowance(world.vault.address, world.distributor.address) == MAX_UINT256
    world.vault.set_token_allowed(world.black.address, True, sender=admin)
    world.vault.deposit(
        world.black.address, 10, world.users[0].address, sender=world.sender(world.users[0])
    )


def test_disallowing_a_token_never_allowed_reverts(world: World) -> None:
    """Disallowing an unknown token is refused with TokenNotAllowed (nothing to undo)."""
    other = _new_token(world)
    with reverts("TokenNotAllowed", token=other.address):
        world.vault.set_token_allowed(other.address, False, sender=world.sender(world.admin))


def test_allowing_a_token_approves_the_distributor(world: World) -> None:
    """A newly allowed token is listed, and the distributor gets an unlimited allowance."""
    other = _new_token(world)
    world.vault.set_token_allowed(other.address, True, sender=world.sender(world.admin))
    assert world.vault.token_status(other.address) is TokenStatus.ALLOWED
    assert world.vault.tokens() == [world.black.address, world.usd.address, other.address]
    assert other.allowance(world.vault.address, world.distributor.address) == MAX_UINT256


def test_more_than_the_token_limit_reverts(world: World) -> None:
    """The Vault knows at most TOKENS_MAX (16) tokens; the seventeenth reverts TooManyTokens."""
    admin = world.sender(world.admin)
    for _ in range(16 - len(world.vault.tokens())):
        world.vault.set_token_allowed(_new_token(world).address, True, sender=admin)
    with reverts("TooManyTokens", tokensMax=16):
        world.vault.set_token_allowed(_new_token(world).address, True, sender=admin)


def test_deposit_beyond_the_allowance_reverts_with_the_token_error(world: World) -> None:
    """Without enough allowance the token's own ERC20InsufficientAllowance comes back."""
    depositor = world.users[0]
    world.fund(depositor, world.usd, 10)
    with reverts(
        "ERC20InsufficientAllowance", spender=world.vault.address, allowance=10, needed=11
    ):
        world.vault.deposit(
            world.usd.address, 11, depositor.address, sender=world.sender(depositor)
        )


def test_deposit_with_permit_needs_no_prior_approval(world: World) -> None:
    """A permit signed by the depositor for the Vault approves and deposits in one
    transaction, using the permit's nonce and leaving no allowance behind."""
    depositor, account = world.users[0], world.users[1]
    world.usd.mint(depositor.address, 1_000_000, sender=world.sender(world.admin))
    permit = world.usd.sign_permit(depositor, world.vault.address, 1_000_000, world.now() + 3600)
    receipt = world.vault.deposit_with_permit(
        world.usd.address, 1_000_000, account.address, permit, sender=world.sender(depositor)
    )
    (log,) = world.vault.deposits_in(receipt)
    assert (log.account, log.amount, log.depositor) == (
        account.address,
        1_000_000,
        depositor.address,
    )
    assert world.usd.nonces(depositor.address) == 1
    assert world.usd.allowance(depositor.address, world.vault.address) == 0
    assert world.usd.balance_of(world.vault.address) == 1_000_000


def test_deposit_with_an_expired_permit_reverts(world: World) -> None:
    """A permit whose deadline has passed reverts ERC2612ExpiredSignature with the deadline."""
    depositor = world.users[0]
    world.usd.mint(depositor.address, 100, sender=world.sender(world.admin))
    deadline = world.now() - 1
    permit = world.usd.sign_permit(depositor, world.vault.address, 100, deadline)
    with reverts("ERC2612ExpiredSignature", deadline=deadline):
        world.vault.deposit_with_permit(
            world.usd.address, 100, depositor.address, permit, sender=world.sender(depositor)
        )


def test_deposit_with_a_permit_signed_by_someone_else_reverts(world: World) -> None:
    """A permit signed by another key than the depositor's reverts ERC2612InvalidSigner."""
    depositor, stranger = world.users[0], world.users[1]
    world.usd.mint(depositor.address, 100, sender=world.sender(world.admin))
    permit = world.usd.sign_permit(stranger, world.vault.address, 100, world.now() + 3600, nonce=0)
    with reverts("ERC2612InvalidSigner", owner=depositor.address):
        world.vault.deposit_with_permit(
            world.usd.address, 100, depositor.address, permit, sender=world.sender(depositor)
        )


def test_deposit_with_a_permit_already_submitted_by_someone_else_succeeds(world: World) -> None:
    """If a third party submitted the depositor's permit first (front-running it), the
    deposit still goes through on the allowance that permit set."""
    depositor, front_runner = world.users[0], world.users[1]
    world.usd.mint(depositor.address, 100, sender=world.sender(world.admin))
    permit = world.usd.sign_permit(depositor, world.vault.address, 100, world.now() + 3600)
    world.usd.permit(
        depositor.address, world.vault.address, permit, sender=world.sender(front_runner)
    )
    world.vault.deposit_with_permit(
        world.usd.address, 100, depositor.address, permit, sender=world.sender(depositor)
    )
    assert world.usd.balance_of(world.vault.address) == 100


def test_deposit_with_permit_of_a_disallowed_token_reverts_before_the_permit(world: World) -> None:
    """The allow-list is checked before the permit is used: TokenNotAllowed, nonce unused."""
    other = _new_token(world)
    depositor = world.users[0]
    permit = other.sign_permit(depositor, world.vault.address, 5, world.now() + 3600)
    with reverts("TokenNotAllowed", token=other.address):
        world.vault.deposit_with_permit(
            other.address, 5, depositor.address, permit, sender=world.sender(depositor)
        )
    assert other.nonces(depositor.address) == 0


def test_paused_vault_refuses_deposits_until_unpaused(world: World) -> None:
    """The pauser pauses: both deposit paths revert EnforcedPause; after unpause they work."""
    depositor = world.users[0]
    world.fund(depositor, world.usd, 20)
    pauser = world.sender(world.pauser)
    world.vault.pause(sender=pauser)
    assert world.vault.paused()
    with reverts("EnforcedPause"):
        world.vault.deposit(
            world.usd.address, 10, depositor.address, sender=world.sender(depositor)
        )
    permit = world.usd.sign_permit(depositor, world.vault.address, 10, world.now() + 3600)
    with reverts("EnforcedPause"):
        world.vault.deposit_with_permit(
            world.usd.address, 10, depositor.address, permit, sender=world.sender(depositor)
        )
    with reverts("EnforcedPause"):
        world.vault.pause(sender=pauser)
    world.vault.unpause(sender=pauser)
    with reverts("ExpectedPause"):
        world.vault.unpause(sender=pauser)
    world.vault.deposit(world.usd.address, 10, depositor.address, sender=world.sender(depositor))
    assert world.usd.balance_of(world.vault.address) == 10


@pytest.mark.parametrize("function", ["pause", "unpause"])
def test_pausing_without_the_pauser_role_reverts(world: World, function: str) -> None:
    """Neither the admin nor a user may pause or unpause the Vault: only PAUSER_ROLE."""
    if function == "unpause":
        world.vault.pause(sender=world.sender(world.pauser))
    for account in (world.admin, world.users[0]):
        with reverts(
            "AccessControlUnauthorizedAccount", account=account.address, neededRole=PAUSER_ROLE
        ):
            getattr(world.vault, function)(sender=world.sender(account))


def test_admin_functions_refuse_other_callers(world: World) -> None:
    """Allowing tokens, setting the distributor and granting roles need DEFAULT_ADMIN_ROLE."""
    intruder = world.sender(world.pauser)
    expected = {"account": world.pauser.address, "neededRole": DEFAULT_ADMIN_ROLE}
    with reverts("AccessControlUnauthorizedAccount", **expected):
        world.vault.set_token_allowed(world.usd.address, False, sender=intruder)
    with reverts("AccessControlUnauthorizedAccount", **expected):
        world.vault.set_distributor(world.pauser.address, sender=intruder)
    with reverts("AccessControlUnauthorizedAccount", **expected):
        world.vault.grant_role(PAUSER_ROLE, world.users[0].address, sender=intruder)


def test_changing_the_distributor_moves_every_allowance(world: World) -> None:
    """A new distributor gets the unlimited allowance of every known token and the old one
    loses it; DistributorSet names both."""
    new = world.users[3].address
    receipt = world.vault.set_distributor(new, sender=world.sender(world.admin))
    assert world.vault.distributor() == new
    for token in (world.black, world.usd):
        assert token.allowance(world.vault.address, new) == MAX_UINT256
        assert token.allowance(world.vault.address, world.distributor.address) == 0
    (event,) = world.vault.contract.events.DistributorSet().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["previous"], event["args"]["distributor"]) == (
        world.distributor.address,
        new,
    )


def test_setting_the_zero_distributor_reverts(world: World) -> None:
    """The distributor cannot be set to the zero address (ZeroAddress)."""
    with reverts("ZeroAddress"):
        world.vault.set_distributor("0x" + "00" * 20, sender=world.sender(world.admin))

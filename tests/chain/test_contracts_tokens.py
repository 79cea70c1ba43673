"""BlackToken and TestUSD on py-evm: metadata, minting by role, the cap, permits."""

from __future__ import annotations

from chain.contracts import DEFAULT_ADMIN_ROLE, MINTER_ROLE, deploy_contract
from chain.deploy import BLACK_CAP
from tests.chain.conftest import World, reverts


def test_black_token_is_capped_18_decimal_black(world: World) -> None:
    """$BLACK has its name, symbol, 18 decimals, the deployment's cap and no supply yet."""
    assert world.black.name() == "BlackTail"
    assert world.black.symbol() == "BLACK"
    assert world.black.decimals() == 18
    assert world.black.cap() == BLACK_CAP
    assert world.black.total_supply() == 0


def test_usd_token_has_six_decimals(world: World) -> None:
    """The test stablecoin has 6 decimals, like the USD stablecoins on public chains."""
    assert world.usd.decimals() == 6
    assert world.usd.symbol() == "tUSD"


def test_minter_mints_both_tokens(world: World) -> None:
    """The account holding MINTER_ROLE mints to anyone, raising the total supply."""
    user = world.users[0]
    world.black.mint(user.address, 5 * 10**18, sender=world.sender(world.admin))
    world.usd.mint(user.address, 7 * 10**6, sender=world.sender(world.admin))
    assert world.black.balance_of(user.address) == 5 * 10**18
    assert world.usd.balance_of(user.address) == 7 * 10**6
    assert world.black.total_supply() == 5 * 10**18


def test_minting_without_the_minter_role_reverts(world: World) -> None:
    """An account without MINTER_ROLE cannot mint either token, even the operator."""
    for token in (world.black, world.usd):
        with reverts(
            "AccessControlUnauthorizedAccount",
            account=world.operator.address,
            neededRole=MINTER_ROLE,
        ):
            token.mint(world.operator.address, 1, sender=world.sender(world.operator))


def test_minting_past_the_cap_reverts_with_exceeded_cap(world: World) -> None:
    """Minting up to the cap works; one base unit more reverts ERC20ExceededCap."""
    admin = world.sender(world.admin)
    world.black.mint(world.users[0].address, BLACK_CAP, sender=admin)
    with reverts("ERC20ExceededCap", increasedSupply=BLACK_CAP + 1, cap=BLACK_CAP):
        world.black.mint(world.users[0].address, 1, sender=admin)


def test_a_zero_cap_is_refused_at_deployment(world: World) -> None:
    """Deploying BlackToken with a cap of zero reverts ERC20InvalidCap."""
    with reverts("ERC20InvalidCap", cap=0):
        deploy_contract(world.w3, "BlackToken", [world.admin.address, 0], world.sender(world.admin))


def test_only_the_admin_grants_the_minter_role(world: World) -> None:
    """The admin grants MINTER_ROLE; a non-admin trying to grant it reverts."""
    user = world.users[0]
    with reverts("AccessControlUnauthorizedAccount", neededRole=DEFAULT_ADMIN_ROLE):
        world.black.grant_role(MINTER_ROLE, user.address, sender=world.sender(user))
    world.black.grant_role(MINTER_ROLE, user.address, sender=world.sender(world.admin))
    assert world.black.has_role(MINTER_ROLE, user.address)
    world.black.mint(user.address, 1, sender=world.sender(user))
    assert world.black.balance_of(user.address) == 1


def test_permit_sets_an_allowance_from_a_signature(world: World) -> None:
    """A permit signed by the owner, submitted by anyone, sets the allowance and uses a nonce."""
    owner, spender = world.users[0], world.users[1]
    permit = world.black.sign_permit(owner, spender.address, 123, world.now() + 3600)
    world.black.permit(owner.address, spender.address, permit, sender=world.sender(spender))
    assert world.black.allowance(owner.address, spender.address) == 123
    assert world.black.nonces(owner.address) == 1

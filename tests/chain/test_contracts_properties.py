"""Random deposit / settle / claim sequences on py-evm against a Python model of the ledger.

The model credits deposits, lets the settler make at most what was deposited withdrawable
(cumulative amounts that never go down), and remembers what each account has claimed.
Whatever the sequence, every claim pays exactly the model's difference, per token the sum
claimed never exceeds the sum deposited, and the Vault holds exactly the difference.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.evm import ethereum_tester
from chain.merkle import StandardMerkleTree
from tests.chain.conftest import World, reverts

ACTORS = 4
TOKENS = 2
STOCK = 10**12

deposits = st.tuples(
    st.just("deposit"),
    st.integers(0, ACTORS - 1),
    st.integers(0, ACTORS - 1),
    st.integers(0, TOKENS - 1),
    st.integers(1, 1_000),
)
settlements = st.tuples(
    st.just("settle"),
    st.lists(
        st.tuples(st.integers(0, ACTORS - 1), st.integers(0, TOKENS - 1), st.integers(0, 600)),
        max_size=4,
    ),
)
claims = st.tuples(
    st.just("claim"),
    st.integers(0, ACTORS - 1),
    st.integers(0, TOKENS - 1),
    st.integers(0, ACTORS - 1),
)


@pytest.fixture(scope="module")
def stocked_world(deployed_world: World) -> Iterator[World]:
    """The module's network with every actor holding and approving plenty of both tokens."""
    admin = deployed_world.sender(deployed_world.admin)
    for user in deployed_world.users[:ACTORS]:
        for token in (deployed_world.usd, deployed_world.black):
            token.mint(user.address, STOCK, sender=admin)
            token.approve(deployed_world.vault.address, STOCK, sender=deployed_world.sender(user))
    return deployed_world


class Model:
    """What the ledger says: deposits, cumulative withdrawable amounts, claims."""

    def __init__(self) -> None:
        self.deposited = [0] * TOKENS
        self.cumulative: dict[tuple[int, int], int] = {}
        self.claimed: dict[tuple[int, int], int] = {}
        self.tree: StandardMerkleTree | None = None
        self.epoch = 0

    def withdrawable_total(self, token: int) -> int:
        return sum(amount for (_, t), amount in self.cumulative.items() if t == token)


@settings(max_examples=40)
@given(steps=st.lists(st.one_of(deposits, settlements, claims), min_size=1, max_size=10))
def test_claims_match_the_model_and_never_exceed_deposits(
    stocked_world: World, steps: list[tuple[object, ...]]
) -> None:
    """Every claim pays the model's difference, and per token claimed <= deposited with the
    Vault holding exactly deposited minus claimed."""
    world = stocked_world
    tester = ethereum_tester(world.w3)
    snapshot = tester.take_snapshot()
    try:
        _run(world, steps)
    finally:
        tester.revert_to_snapshot(snapshot)


def _run(world: World, steps: list[tuple[object, ...]]) -> None:
    tokens = [world.usd, world.black]
    actors = world.users[:ACTORS]
    vault_start = [token.balance_of(world.vault.address) for token in tokens]
    model = Model()
    for step in steps:
        kind = step[0]
        if kind == "deposit":
            _, depositor, account, token, amount = step
            assert isinstance(depositor, int) and isinstance(account, int)
            assert isinstance(token, int) and isinstance(amount, int)
            world.vault.deposit(
                tokens[token].address,
                amount,
                actors[account].address,
                sender=world.sender(actors[depositor]),
            )
            model.deposited[token] += amount
        elif kind == "settle":
            increments = step[1]
            assert isinstance(increments, list)
            for account, token, amount in increments:
                # The ledger can only make withdrawable what was deposited.
                room = model.deposited[token] - model.withdrawable_total(token)
                key = (account, token)
                model.cumulative[key] = model.cumulative.get(key, 0) + min(amount, room)
            entries = [
                [actors[a].address, tokens[t].address, amount]
                for (a, t), amount in sorted(model.cumulative.items())
                if amount > 0
            ]
            if not entries:
                continue
            model.tree, _ = world.post_epoch([(a, t, amount) for a, t, amount in entries])
            model.epoch += 1
        else:
            _, account, token, caller = step
            assert isinstance(account, int) and isinstance(token, int)
            assert isinstance(caller, int)
            cumulative = model.cumulative.get((account, token), 0)
            if model.tree is None or cumulative == 0:
                continue
            value = [actors[account].address, tokens[token].address, cumulative]
            proof = model.tree.get_proof(value)
            owed = cumulative - model.claimed.get((account, token), 0)
            before = tokens[token].balance_of(actors[account].address)
            call_args = (model.epoch, value[0], value[1], cumulative, proof)
            if owed == 0:
                with reverts("NothingToClaim"):
                    world.distributor.claim(*call_args, sender=world.sender(actors[caller]))
                continue
            receipt = world.distributor.claim(*call_args, sender=world.sender(actors[caller]))
            assert world.distributor.claims_in(receipt)[0].amount == owed
            assert tokens[token].balance_of(actors[account].address) - before == owed
            model.claimed[(account, token)] = cumulative
        for index, token_client in enumerate(tokens):
            claimed = sum(amount for (_, t), amount in model.claimed.items() if t == index)
            assert claimed <= model.deposited[index]
            held = token_client.balance_of(world.vault.address) - vault_start[index]
            assert held == model.deposited[index] - claimed

"""Fixtures for protocol tests: keys, an initialized Network on each store, a signer."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from protocol.application import Network
from protocol.commands import SignedCommand, sign_command
from protocol.keys import PrivateKey
from protocol.storage import Storage

CHAIN_ID = 31337
_counter = itertools.count(1)


def key_from_int(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


@pytest.fixture(scope="session")
def operator() -> PrivateKey:
    return key_from_int(0xB1AC7)


@pytest.fixture(scope="session")
def alice() -> PrivateKey:
    return key_from_int(0xA11CE)


@pytest.fixture(scope="session")
def bob() -> PrivateKey:
    return key_from_int(0xB0B)


Sign = Callable[..., SignedCommand]


def make_command(
    key: PrivateKey, kind: str, chain_id: int = CHAIN_ID, **fields: Any
) -> SignedCommand:
    """Sign a command, filling clientId, nonce and expiry unless given."""
    number = next(_counter)
    fields.setdefault("clientId", f"test-{number}")
    fields.setdefault("nonce", number)
    fields.setdefault("expiry", int(time.time()) + 600)
    return sign_command(key, kind, chain_id, fields)


@pytest.fixture
def sign() -> Sign:
    return make_command


@pytest.fixture
def network(storage: Storage, operator: PrivateKey) -> Iterator[Network]:
    app = Network(storage)
    app.initialize(CHAIN_ID, operator.address)
    yield app
    app.close()


def deposit(
    app: Network, operator: PrivateKey, account: str, amount: int, asset: str = "BLACK"
) -> None:
    app.submit(
        make_command(
            operator,
            "Deposit",
            account=account,
            asset=asset,
            amount=amount,
            chainRef=f"{CHAIN_ID}:0x{next(_counter):064x}:0",
        )
    )

"""Fixtures of the stress tests: the store a gateway runs on (an SQLite file in its data
directory, or a fresh PostgreSQL database from tests/conftest.py's cluster), and a seed for
the random parts of a test, printed when it fails so that the run can be repeated."""

from __future__ import annotations

import os
import random

import pytest

SEED_ENV = "BLACKTAIL_STRESS_SEED"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_dsn(request: pytest.FixtureRequest) -> str | None:
    """None for the gateway's SQLite file, else the DSN of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's random choices: BLACKTAIL_STRESS_SEED if set, else fresh;
    shown in the report of a failing test."""
    value = os.environ.get(SEED_ENV)
    if value is not None and not value.isdigit():
        raise pytest.UsageError(f"{SEED_ENV}: expected a non-negative integer, got {value!r}")
    chosen = int(value) if value is not None else random.SystemRandom().randrange(2**32)
    request.node.user_properties.append(("seed", chosen))
    print(f"{SEED_ENV}={chosen}")
    return chosen

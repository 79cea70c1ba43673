"""The hardhat JSON-RPC node as a pytest fixture, and when a missing npm toolchain fails.

Wire the fixture into a conftest or a test module with one line::

    hardhat_node = hardhat_node_fixture()               # module scope
    hardhat_node = hardhat_node_fixture(scope="session")

A test that takes `hardhat_node` gets a running `chain.hardhat_node.HardhatNode` (`.url`,
`.chain_id`, `.accounts`), stopped when the scope ends. Each xdist worker starts its own
node on its own free port; nothing is shared between workers.

Without node or the npm packages the tests that need them are skipped, unless CI is set
(as every CI service sets it) or BLACKTAIL_REQUIRE_NODE=1, where they fail: a CI machine
that lost its toolchain must not pass by skipping the contract tests. A toolchain that is
installed but fails to start the node is an error everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Literal, NoReturn

import pytest

from chain.hardhat_node import HardhatNode, ToolchainMissing, start_hardhat_node

REQUIRE_NODE_ENV = "BLACKTAIL_REQUIRE_NODE"
CI_ENV = "CI"

Scope = Literal["function", "class", "module", "package", "session"]


def node_toolchain_required() -> bool:
    """Whether a missing node/npm toolchain must fail tests rather than skip them."""
    value = os.environ.get(REQUIRE_NODE_ENV, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"{REQUIRE_NODE_ENV}: expected 0 or 1, got {value!r}")
    ci = os.environ.get(CI_ENV, "").strip().lower()
    return value == "1" or ci not in ("", "0", "false", "no")


def toolchain_unavailable(reason: str) -> NoReturn:
    """Skip the running test for `reason`, or fail it where the toolchain is required."""
    if node_toolchain_required():
        pytest.fail(f"{reason} (required here: {CI_ENV} or {REQUIRE_NODE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def hardhat_node_fixture(
    scope: Scope = "module", name: str = "hardhat_node"
) -> Callable[[], Iterator[HardhatNode]]:
    """A fixture named `name` that starts a hardhat node for `scope` and stops it after."""

    @pytest.fixture(scope=scope, name=name)
    def hardhat_node() -> Iterator[HardhatNode]:
        try:
            node = start_hardhat_node()
        except ToolchainMissing as error:
            toolchain_unavailable(f"no hardhat node: {error}")
        try:
            yield node
        finally:
            node.stop()

    return hardhat_node

"""The chain watcher: every `Vault` deposit becomes exactly one ledger credit.

The watcher reads the Vault's `Deposited` logs block range by block range, waits until a
deposit's block has `confirmations` confirmations (a block holding a transaction has one
confirmation; each block on top adds one), and submits an operator-signed `Deposit`
command for it (specs/ledger.md) whose `chainRef` is `"<chainId>:<txHash>:<logIndex>"`.

Exactly once, whatever happens in between:
- the command's `clientId` derives from the `chainRef` alone (`deposit_client_id`), so a
  second submission of the same deposit, after a crash or by a second watcher, is a retry
  that returns the first result and credits nothing (the ledger's idempotency rule);
- the cursor (the next block to read) is written to its file atomically, and only after
  every deposit of the range was acknowledged by the ledger: a watcher killed at any point
  restarts at or before the first deposit it had not finished, never after one.
A deposit the ledger refuses stops the watcher with the reason, cursor unmoved: it is an
operating error for a person to look at, never a credit silently skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.contracts import DepositLog, Vault
from chain.deploy import Deployment
from chain.errors import ChainError
from protocol.commands import SignedCommand, sign_command
from protocol.keys import PrivateKey

log = logging.getLogger(__name__)

confirmations_default = 2
# Blocks read per eth_getLogs call: nodes bound the range a log query may span.
range_blocks_max = 2_000
command_expiry_seconds = 24 * 3600

Submit = Callable[[SignedCommand], Any]


class WatcherError(ChainError):
    """The watcher cannot go on: a refused deposit, a cursor for another chain or vault."""


def deposit_client_id(chain_ref: str) -> str:
    """The Deposit command's idempotency key: "deposit-" and 56 hex digits of SHA-256 of the
    chainRef (a chainRef itself is longer than the 64 characters a clientId may have)."""
    return "deposit-" + hashlib.sha256(chain_ref.encode("ascii")).hexdigest()[:56]


@dataclass(frozen=True, slots=True)
class Credited:
    """One deposit the ledger acknowledged (`duplicate` when it had it already)."""

    deposit: DepositLog
    asset: str
    duplicate: bool


class Cursor:
    """The next block to read, kept in a JSON file bound to one chain and one vault."""

    def __init__(self, path: Path | None, deployment: Deployment) -> None:
        self.path = path
        self.chain_id = deployment.chain_id
        self.vault = deployment.vault
        self.next_block = deployment.block_number
        if path is not None and path.exists():
            try:
                saved = json.loads(path.read_text())
                chain_id, vault, next_block = (
                    saved["chain_id"],
                    saved["vault"],
                    int(saved["next_block"]),
                )
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise WatcherError(f"{path}: not a watcher cursor: {error}") from None
            if (chain_id, vault) != (self.chain_id, self.vault):
                raise WatcherError(
                    f"{path}: cursor of vault {vault} on chain {chain_id}, "
                    f"not {self.vault} on {self.chain_id}"
                )
            self.next_block = max(next_block, deployment.block_number)

    def advance(self, next_block: int) -> None:
        self.next_block = next_block
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps(
                {"chain_id": self.chain_id, "vault": self.vault, "next_block": next_block},
                sort_keys=True,
            )
        )
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


class DepositWatcher:
    """Credits Vault deposits to the ledger through `submit` (a Network's, or a gateway's)."""

    def __init__(
        self,
        vault: Vault,
        deployment: Deployment,
        submit: Submit,
        operator: PrivateKey,
        ledger_chain_id: int,
        *,
        confirmations: int = confirmations_default,
        cursor_path: Path | None = None,
    ) -> None:
        if confirmations < 1:
            raise ValueError("confirmations: at least 1 (the deposit's own block)")
        self.vault = vault
        self.deployment = deployment
        self.submit = submit
        self.operator = operator
        self.ledger_chain_id = ledger_chain_id
        self.confirmations = confirmations
        self.cursor = Cursor(cursor_path, deployment)

    def final_block(self) -> int:
        """The newest block with enough confirmations (-1 when there is none yet)."""
        return int(self.vault.w3.eth.block_number) - self.confirmations + 1

    def poll(self) -> list[Credited]:
        """Credit every deposit in the blocks confirmed since the last poll."""
        credited: list[Credited] = []
        last = self.final_block()
        while self.cursor.next_block <= last:
            first = self.cursor.next_block
            to = min(last, first + range_blocks_max - 1)
            deposits = sorted(
                self.vault.deposits(first, to), key=lambda d: (d.block_number, d.log_index)
            )
            for deposit in deposits:
                credited.append(self.credit(deposit))
            self.cursor.advance(to + 1)
        return credited

    def credit(self, deposit: DepositLog) -> Credited:
        """Submit the Deposit command of one deposit (a retry if it was credited before)."""
        asset = self.deployment.asset_of(deposit.token)
        chain_ref = deposit.chain_ref
        command = sign_command(
            self.operator,
            "Deposit",
            self.ledger_chain_id,
            {
                "account": deposit.account,
                "asset": asset.value,
                "amount": deposit.amount,
                "chainRef": chain_ref,
                "clientId": deposit_client_id(chain_ref),
                # Operator nonces only need to be distinct; a retry is recognized by its
                # clientId before its nonce is looked at.
                "nonce": secrets.randbits(128) + 1,
                "expiry": int(time.time()) + command_expiry_seconds,
            },
        )
        try:
            result = self.submit(command)
        except Exception as error:
            raise WatcherError(f"deposit {chain_ref} was refused by the ledger: {error}") from error
        duplicate = bool(getattr(result, "duplicate", False))
        log.info(
            "credited %s %s to %s (%s)", deposit.amount, asset.value, deposit.account, chain_ref
        )
        return Credited(deposit, asset.value, duplicate)

    def run(self, stop: Callable[[], bool], poll_seconds: float = 1.0) -> int:
        """Poll until `stop()` is true; returns how many deposits were credited."""
        count = 0
        while not stop():
            count += len(self.poll())
            time.sleep(poll_seconds)
        return count

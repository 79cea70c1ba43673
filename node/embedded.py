"""The whole network on one machine: what `blacktail demo` tells a story with and
`blacktail up` keeps running for a person to explore.

- a gateway (gunicorn, SQLite store in the data directory) on 127.0.0.1;
- an in-process EVM (py-evm) with the contracts deployed, the operator holding the
  operator role, and the chain watcher crediting Vault deposits through the gateway;
- participants whose keys are both ledger keys and funded chain accounts (a ledger
  address is an Ethereum address);
- provider and verifier agents (`node.provider`, `verifier.agent`) in threads, talking to
  the gateway over HTTP exactly as remote ones do; the epoch settler over the gateway's API.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.types import Wei

from chain.contracts import BlackToken, Sender, SettlementDistributor, TestUSD, Vault
from chain.deploy import Deployment, deploy_network
from chain.evm import funded_accounts, in_process_web3
from chain.settlement import Claim, EpochReport, EpochSettler, build_claim
from chain.watcher import Credited, DepositWatcher
from node.client import GatewayClient, GatewayError
from node.datasets import DatasetError, LoadedDataset, fetch
from node.gateway_ledger import GatewayLedger
from node.gateway_process import RunningGateway, run_gateway
from node.provider import ProviderAgent
from protocol.assets import Asset
from protocol.commands import SignedCommand, sign_command
from protocol.keys import PrivateKey
from protocol.storage import LEDGER_FILE
from verifier.agent import TaskReport, VerifierAgent

log = logging.getLogger(__name__)


class EmbeddedNetworkError(RuntimeError):
    """The embedded network cannot start here."""


GAS_LIMIT = 5_000_000
command_expiry_seconds = 600
agent_poll_seconds = 0.2
_numbers = itertools.count(1)


@dataclass(frozen=True)
class Participant:
    """Someone on the network: a name, a role, and one key for the ledger and the chain."""

    name: str
    role: str
    key: PrivateKey
    account: LocalAccount

    @property
    def address(self) -> str:
        return self.key.address


@dataclass
class Network:
    """A running embedded network (see the module docstring)."""

    gateway: RunningGateway
    client: GatewayClient
    w3: Any
    deployment: Deployment
    admin: LocalAccount
    operator: PrivateKey
    watcher: DepositWatcher
    settler: EpochSettler
    cache_dir: Path
    threads: list[threading.Thread] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    task_reports: list[TaskReport] = field(default_factory=list)

    @property
    def black(self) -> BlackToken:
        return BlackToken(self.w3, self.deployment.black_token)

    @property
    def usd(self) -> TestUSD:
        return TestUSD(self.w3, self.deployment.usd_token)

    @property
    def vault(self) -> Vault:
        return Vault(self.w3, self.deployment.vault)

    @property
    def distributor(self) -> SettlementDistributor:
        return SettlementDistributor(self.w3, self.deployment.distributor)

    @property
    def chain_id(self) -> int:
        return self.gateway.chain_id

    # -- money in and out ----------------------------------------------------------------

    def deposit(self, who: Participant, asset: Asset, amount: int) -> None:
        """Mint `amount` of the token to `who` (test tokens), approve and deposit it."""
        token: BlackToken | TestUSD = self.black if asset is Asset.BLACK else self.usd
        token.mint(who.address, amount, sender=_sender(self.admin))
        token.approve(self.vault.address, amount, sender=_sender(who.account))
        self.vault.deposit(token.address, amount, who.address, sender=_sender(who.account))

    def credit_deposits(self) -> list[Credited]:
        return self.watcher.poll()

    def settle(self) -> EpochReport:
        return self.settler.settle()

    def claim(self, who: Participant, asset: Asset) -> Claim:
        ledger = GatewayLedger(self.client)
        size = self.distributor.head().log_size
        found = build_claim(
            ledger.leaves(size), self.distributor, self.deployment, who.address, asset
        )
        self.distributor.claim(
            found.epoch,
            found.account,
            found.token,
            found.cumulative,
            found.proof,
            sender=_sender(who.account),
        )
        return found

    # -- commands and reads ----------------------------------------------------------------

    def command(
        self, who: PrivateKey, kind: str, context: dict[str, Any] | None = None, **fields: Any
    ) -> Any:
        """Sign and submit one command through the gateway; its result."""
        return self.client.submit(self.sign(who, kind, **fields), context)

    def sign(self, who: PrivateKey, kind: str, **fields: Any) -> SignedCommand:
        """A command signed for this network, with a fresh client id, nonce and expiry."""
        fields.setdefault("clientId", f"embedded-{next(_numbers)}-{secrets.token_hex(6)}")
        fields.setdefault("nonce", secrets.randbits(64) + 1)
        fields.setdefault("expiry", int(time.time()) + command_expiry_seconds)
        return sign_command(who, kind, self.chain_id, fields)

    def balances(self, address: str) -> dict[str, int]:
        reply = self.client.get_json(f"/accounts/{address}/balances")
        return {f"{b['asset']}/{b['bucket']}": int(b["amount"]) for b in reply["balances"]}

    def fetch_dataset(self, dataset_id: str) -> LoadedDataset:
        return fetch(dataset_id, self.client, self.cache_dir)

    # -- agents ------------------------------------------------------------------------------

    def provider_agent(
        self, who: Participant, agent_class: type[ProviderAgent] = ProviderAgent
    ) -> ProviderAgent:
        # Each agent has its own connection: a GatewayClient is not shared across threads.
        client = self.gateway.client(timeout_seconds=60)
        return agent_class(
            client,
            who.key,
            lambda dataset_id: fetch(dataset_id, client, self.cache_dir),
            chain_id=self.chain_id,
        )

    def verifier_agent(self, who: Participant) -> VerifierAgent:
        client = self.gateway.client(timeout_seconds=60)
        return VerifierAgent(
            client,
            who.key,
            lambda dataset_id: fetch(dataset_id, client, self.cache_dir),
            chain_id=self.chain_id,
            poll_seconds=agent_poll_seconds,
            transient_errors=(GatewayError, OSError, DatasetError),
            report=self.task_reports.append,
        )

    def run_in_background(self, name: str, work: Callable[[threading.Event], object]) -> None:
        """Run `work(stop)` on a daemon thread until the network stops."""

        def body() -> None:
            try:
                work(self.stop)
            except Exception:  # An agent's crash is reported, never silent.
                log.exception("%s stopped with an error", name)

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def shutdown(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def _sender(account: LocalAccount) -> Sender:
    return Sender.from_key(account).with_gas_limit(GAS_LIMIT)


def participants(accounts: list[LocalAccount], roles: list[tuple[str, str]]) -> list[Participant]:
    """One participant per (name, role), with the funded chain accounts after the admin's."""
    return [
        Participant(name, role, PrivateKey.from_bytes(bytes(account.key)), account)
        for (name, role), account in zip(roles, accounts, strict=False)
    ]


@contextlib.contextmanager
def embedded_network(
    data_dir: Path, *, accounts: int = 12, gateway_workers: int = 2, confirmations: int = 1
) -> Iterator[tuple[Network, list[LocalAccount]]]:
    """Start the gateway and the chain, deploy, wire the watcher and the settler; stop all
    of it when the block ends. Yields the network and the funded chain accounts (the first
    is the contracts' admin; give the others to participants).

    The in-process chain lives as long as this process, so the data directory must be new:
    a ledger that recorded deposits and epochs of an earlier chain would not match it."""
    if (data_dir / LEDGER_FILE).exists():
        raise EmbeddedNetworkError(
            f"{data_dir} already holds a ledger from an earlier run; the in-process chain "
            "starts empty each time, so use a new data directory"
        )
    with run_gateway(data_dir, workers=gateway_workers, dev=False) as gateway:
        client = gateway.client(timeout_seconds=60)
        w3 = in_process_web3(accounts)
        chain_accounts = funded_accounts(accounts)
        admin = chain_accounts[0]
        operator = gateway.operator
        deployment = deploy_network(w3, _sender(admin), operator=operator.address)
        (data_dir / "deployment.json").write_text(deployment.to_json())
        # The operator's key is the gateway's: it posts the roots, so it needs gas money.
        w3.eth.send_transaction(
            {"from": admin.address, "to": operator.address, "value": Wei(10 * 10**18)}
        )
        ledger = GatewayLedger(client)
        watcher = DepositWatcher(
            Vault(w3, deployment.vault),
            deployment,
            ledger.submit,
            operator,
            gateway.chain_id,
            confirmations=confirmations,
            cursor_path=data_dir / "watcher.json",
        )
        settler = EpochSettler(
            ledger,
            operator,
            SettlementDistributor(w3, deployment.distributor),
            deployment,
            Sender.from_key(operator.secret_bytes()).with_gas_limit(GAS_LIMIT),
        )
        network = Network(
            gateway, client, w3, deployment, admin, operator, watcher, settler, data_dir / "cache"
        )
        try:
            yield network, chain_accounts[1:]
        finally:
            network.shutdown()
            client.close()

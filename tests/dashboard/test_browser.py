"""The dashboard in headless Chromium against a real network: a gunicorn gateway (two
workers) on 127.0.0.1, the real provider agent training the tiny example job, a cheating
provider, and two real verifier agents re-executing sampled steps and refereeing. The job's
page, opened before any work is done, follows the job through its segments without being
reloaded; every page shows the network's facts; each is saved as a screenshot.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from node.adversaries import cheat
from node.client import GatewayClient, GatewayError
from node.datasets import build_synthetic, fetch, publish, save_dataset
from node.gateway.dashboard import BUNDLE, bundle_version
from node.provider import ProviderAgent
from node.trainer import SegmentRun
from protocol.commands import sign_command
from protocol.jobspec import JobSpec, parse_job_spec
from protocol.keys import PrivateKey
from tests.dashboard.conftest import screenshot
from tests.gateway_server import REPO_ROOT, RunningGateway, run_gateway
from verifier.agent import VerifierAgent
from verifier.model import TrainState
from verifier.reexecute import Examples

TINY = REPO_ROOT / "specs" / "examples" / "tiny.yaml"
BLACK = 10**18
PRICE = 10**13
# How long the page may take to show what the ledger already holds: a poll every 2 s.
dom_wait_seconds = 20.0
_numbers = itertools.count(1)


def key(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


DEVELOPER, HONEST = key(0xDA51), key(0xDA52)
VERIFIERS = (key(0xDA61), key(0xDA62))
# A caught cheater is jailed, so each test that needs one registers its own.
_cheaters = itertools.count(0xDA70)


class CheatingProvider(ProviderAgent):
    """The provider agent, except that it skips the work of every step it is paid for
    (node.adversaries' "skip"). Its commitment, checkpoints and openings are
    self-consistent, so only re-executing a sampled step shows the lie."""

    def _train(
        self, spec: JobSpec, data: Examples, start: TrainState, lease: dict[str, Any]
    ) -> SegmentRun:
        steps = lease["end_step"] - lease["start_step"]
        return cheat(
            spec, data, start, lease["end_step"], set(range(steps)), "skip", checkpoint_every=1
        )


@dataclass
class Network:
    gateway: RunningGateway
    client: GatewayClient
    spec: JobSpec
    verifiers: list[VerifierAgent]
    fetcher: Callable[[GatewayClient], Callable[[str], Examples]]
    honest: ProviderAgent = field(init=False)

    def url(self, path: str) -> str:
        return self.gateway.base_url + path

    def command(
        self, who: PrivateKey, path: str, kind: str, context: dict[str, Any] | None = None, **m: Any
    ) -> Any:
        number = next(_numbers)
        m.setdefault("clientId", f"browser-{number}-{time.time_ns()}")
        m.setdefault("nonce", time.time_ns() + number)
        m.setdefault("expiry", int(time.time()) + 600)
        body = sign_command(who, kind, self.gateway.chain_id, m).to_json()
        if context is not None:
            body["context"] = context
        return self.client.post_json(path, body)["outcome"]

    def provider(self, cls: type[ProviderAgent], who: PrivateKey, device: str) -> ProviderAgent:
        """A funded provider agent of class `cls`, registered with 2 GPUs of `device`."""
        self.client.post_json(
            "/dev/deposit", {"account": who.address, "asset": "BLACK", "amount": 100 * BLACK}
        )
        agent_client = self.gateway.client()
        agent = cls(agent_client, who, self.fetcher(agent_client), chain_id=self.gateway.chain_id)
        agent.register(
            device=device,
            gpus=2,
            memoryMb=80_000,
            benchmarkGflops=900,
            priceBlack=PRICE,
            priceUsd=10,
            stake=20 * BLACK,
        )
        return agent

    def cheater(self) -> ProviderAgent:
        return self.provider(CheatingProvider, key(next(_cheaters)), "cpu")

    def submit(self) -> str:
        spec = self.spec
        return str(
            self.command(
                DEVELOPER,
                "/jobs",
                "SubmitJob",
                {"spec": spec.to_json()},
                specHash="0x" + spec.digest().hex(),
            )["job"]
        )

    def verify(self, rounds_max: int = 6) -> int:
        """Run passes of both verifier agents until one posts nothing; what they posted."""
        posted = 0
        for _ in range(rounds_max):
            done = sum(agent.run_once() for agent in self.verifiers)
            if done == 0:
                return posted
            posted += done
        raise AssertionError(f"the verifiers still had work after {rounds_max} rounds")

    def segment(self, provider: ProviderAgent) -> None:
        """`provider` leases, trains, commits and opens the next segment; the verifiers
        judge it (and referee it if it is rejected)."""
        report = provider.run_once()
        assert report is not None, "no segment to lease"
        assert self.verify() >= 1


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """A gateway with the tiny dataset published, the developer funded, the honest
    provider and two verifiers registered; no job yet (cheaters are registered by the
    tests that need one: a caught cheater is jailed)."""
    if bundle_version() is None:
        pytest.fail(f"the dashboard's script is not built ({BUNDLE}): run `make dashboard`")
    root = tmp_path_factory.mktemp("dashboard-browser")
    with run_gateway(root / "gateway", workers=2) as gateway:
        client = gateway.client()
        document = yaml.safe_load(TINY.read_text())
        document["total_steps"], document["segment_steps"] = 40, 10
        spec = parse_job_spec(document)
        save_dataset(build_synthetic(0, 512, 16, 4), root / "tiny")
        assert publish(root / "tiny", client) == "0x" + spec.dataset.sha256.hex()
        for who in (DEVELOPER, *VERIFIERS):
            client.post_json(
                "/dev/deposit", {"account": who.address, "asset": "BLACK", "amount": 100 * BLACK}
            )

        def fetcher(agent_client: GatewayClient) -> Callable[[str], Examples]:
            return lambda dataset: fetch(dataset, agent_client, root / "cache")

        verifiers = []
        for who in VERIFIERS:
            agent_client = gateway.client()
            verifier = VerifierAgent(
                agent_client,
                who,
                fetcher(agent_client),
                chain_id=gateway.chain_id,
                poll_seconds=0.1,
                transient_errors=(GatewayError, OSError),
            )
            verifier.register(20 * BLACK)
            verifiers.append(verifier)
        network = Network(gateway, client, spec, verifiers, fetcher)
        network.honest = network.provider(ProviderAgent, HONEST, "NVIDIA H100")
        yield network


def text(browser: WebDriver, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def wait_for(browser: WebDriver, what: str, condition: Callable[[WebDriver], object]) -> None:
    """Wait (bounded) until `condition` holds on the page as it is, without reloading."""
    try:
        WebDriverWait(browser, dom_wait_seconds, poll_frequency=0.2).until(condition)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {dom_wait_seconds} s") from None


def open_page(browser: WebDriver, url: str) -> None:
    """Load `url` and wait until its script has applied a first poll; then mark the
    document, so that a later check can tell it was never reloaded."""
    browser.get(url)
    wait_for(
        browser,
        "its first update",
        lambda b: b.execute_script("return document.body.dataset.updates"),
    )
    browser.execute_script("window.blacktailLoaded = true;")


def still_the_same_document(browser: WebDriver) -> bool:
    return browser.execute_script("return window.blacktailLoaded === true;") is True


def console_errors(browser: WebDriver) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_a_job_page_follows_the_job_live_as_segments_are_verified(
    chromium: WebDriver, network: Network, artifacts: Path
) -> None:
    """The job page opened at submission updates itself, without a reload, as each segment
    is trained and verified: the accepted count and progress meter rise, the loss curve
    gains each verified segment's steps, the cheater's rejected segment and the referee's
    fraud ruling appear, and the job ends completed; the console stays free of errors."""
    job = network.submit()
    open_page(chromium, network.url(f"/ui/jobs/{job}"))
    assert text(chromium, '[data-fact="status"]') == "submitted"
    assert text(chromium, '[data-fact="segments_accepted"]') == "0 / 4"
    screenshot(chromium, artifacts, "job-submitted")

    network.segment(network.honest)
    wait_for(
        chromium,
        "segment 0 accepted",
        lambda b: text(b, '[data-fact="segments_accepted"]') == "1 / 4",
    )
    assert text(chromium, '[data-fact="status"]') == "running"
    assert chromium.execute_script("return document.querySelector('progress').value") == 1
    wait_for(
        chromium,
        "10 points of loss",
        lambda b: (
            b.execute_script(
                "return document.querySelector('canvas[data-chart=\"loss\"]').dataset.points"
            )
            == "10"
        ),
    )
    screenshot(chromium, artifacts, "job-first-segment")

    network.segment(network.cheater())
    wait_for(
        chromium,
        "the fraud ruling",
        lambda b: "fraud" in text(b, 'tbody[data-table="disputes"]'),
    )
    commitments = text(chromium, 'tbody[data-table="commitments"]')
    assert "rejected at" in commitments and "fraud" in commitments
    assert text(chromium, '[data-fact="requeues"]') == "1"
    screenshot(chromium, artifacts, "job-fraud-caught")

    for _ in range(3):
        network.segment(network.honest)
    wait_for(
        chromium, "the job completed", lambda b: text(b, '[data-fact="status"]') == "completed"
    )
    assert text(chromium, '[data-fact="segments_accepted"]') == "4 / 4"
    assert text(chromium, '[data-fact="steps_verified"]') == "40 / 40"
    blocks = chromium.find_elements(By.CSS_SELECTOR, '[data-timeline="segments"] li')
    assert [b.get_attribute("class") for b in blocks] == ["block tone-ok"] * 4
    # 40 verified steps and the 10 the cheater committed and lost.
    wait_for(
        chromium,
        "the whole loss curve",
        lambda b: (
            b.execute_script(
                "return document.querySelector('canvas[data-chart=\"loss\"]').dataset.points"
            )
            == "50"
        ),
    )
    assert still_the_same_document(chromium), "the page was reloaded"
    assert int(chromium.execute_script("return document.body.dataset.updates")) >= 3
    assert text(chromium, "#live .live-text").startswith("live")
    screenshot(chromium, artifacts, "job-completed")
    assert console_errors(chromium) == []


def test_the_audit_page_shows_a_new_anchor_without_reloading(
    chromium: WebDriver, network: Network, artifacts: Path
) -> None:
    """The auditor's page follows the log: an epoch the operator settles over the log as
    it is appears as the latest anchor, checked consistent against the log's own root."""
    open_page(chromium, network.url("/ui/audit"))
    assert text(chromium, '[data-fact="signature_check"]') == "valid"
    head = network.client.get_json("/tree-head")
    epoch = 1 + int(text(chromium, '[data-fact="epochs"]'))
    network.command(
        network.gateway.operator,
        "/commands",
        "SettleEpoch",
        epoch=epoch,
        root="0x" + "ab" * 32,
        logSize=head["size"],
        logRoot=head["root"],
        blackToken="0x" + "b1" * 20,
        usdToken="0x" + "05" * 20,
        chainRef="0x" + "c4" * 32,
    )
    wait_for(chromium, "the new epoch", lambda b: text(b, '[data-fact="epoch"]') == str(epoch))
    assert text(chromium, '[data-fact="audit_status"]') == "consistent"
    assert text(chromium, '[data-fact="anchor_root"]') == head["root"]
    assert still_the_same_document(chromium)
    screenshot(chromium, artifacts, "audit")
    assert console_errors(chromium) == []


def test_every_page_shows_the_network_and_is_saved_as_a_screenshot(
    chromium: WebDriver, network: Network, artifacts: Path
) -> None:
    """After a job has run (one provider cheating, caught), and its model is listed, each
    page shows its facts in the browser, its charts are drawn, and each is screenshotted."""
    job = network.submit()
    cheater = network.cheater()
    for provider in (network.honest, cheater, network.honest, network.honest, network.honest):
        network.segment(provider)
    final = network.client.get_json(f"/jobs/{job}")
    assert final["status"] == "completed"
    network.command(
        DEVELOPER,
        "/market/listings",
        "ListModel",
        artifact=final["checkpoint"],
        name="Tiny MLP, verified",
        task="classification",
        license="MIT",
        licenseText="",
        description="Trained on BlackTail; every segment verified by re-execution",
        price=2 * BLACK,
        asset="BLACK",
        royaltyBps=500,
        provenanceJob=job,
        hub=False,
        requestPrice=0,
    )
    pages: list[tuple[str, str, Callable[[WebDriver], None]]] = [
        ("overview", "/ui/", lambda b: _overview(b)),
        ("job", f"/ui/jobs/{job}", lambda b: _job(b)),
        ("provider-honest", f"/ui/providers/{HONEST.address}", lambda b: _provider(b, "active")),
        (
            "provider-cheater",
            f"/ui/providers/{cheater.key.address}",
            lambda b: _provider(b, "jailed"),
        ),
        ("balances", "/ui/accounts", lambda b: _balances(b)),
        ("account", f"/ui/accounts/{HONEST.address}", lambda b: _account(b)),
        ("market", "/ui/market", lambda b: _market(b)),
        ("audit-page", "/ui/audit", lambda b: _audit(b)),
    ]
    for name, path, check in pages:
        open_page(chromium, network.url(path))
        check(chromium)
        assert console_errors(chromium) == [], name
        screenshot(chromium, artifacts, name)
    saved = {p.stem for p in artifacts.glob("*.png")}
    assert {name for name, _, _ in pages} <= saved


def _points(browser: WebDriver, chart: str) -> int:
    value = browser.execute_script(
        f"return document.querySelector('canvas[data-chart=\"{chart}\"]').dataset.points"
    )
    return int(value)


def _overview(browser: WebDriver) -> None:
    assert int(text(browser, '[data-fact="providers"]')) >= 2
    assert text(browser, '[data-fact="gpus"]') == "2"  # the cheaters' are offline (jailed)
    assert int(text(browser, '[data-fact="steps_verified"]')) >= 40
    providers = text(browser, 'tbody[data-table="providers"]')
    assert "jailed" in providers and "active" in providers and "NVIDIA H100" in providers
    assert "completed" in text(browser, 'tbody[data-table="jobs"]')
    assert "fraud" in text(browser, 'tbody[data-table="disputes"]')
    assert _points(browser, "throughput") == 30


def _job(browser: WebDriver) -> None:
    assert text(browser, '[data-fact="status"]') == "completed"
    assert text(browser, '[data-fact="segments_accepted"]') == "4 / 4"
    assert _points(browser, "loss") == 50
    assert "fraud" in text(browser, 'tbody[data-table="disputes"]')


def _provider(browser: WebDriver, status: str) -> None:
    assert text(browser, '[data-fact="status"]') == status
    if status == "jailed":
        assert text(browser, '[data-fact="slashed"]').endswith("BLACK")
        assert int(text(browser, '[data-fact="rejected"]')) >= 1
    else:
        assert text(browser, '[data-fact="earned"]').endswith("BLACK")
        assert int(text(browser, '[data-fact="accepted"]')) >= 4


def _balances(browser: WebDriver) -> None:
    rows = text(browser, 'tbody[data-table="accounts"]')
    for role in ("system", "provider", "verifier", "developer"):
        assert role in rows


def _account(browser: WebDriver) -> None:
    balances = text(browser, 'tbody[data-table="balances"]')
    assert "available" in balances and "stake" in balances


def _market(browser: WebDriver) -> None:
    listings = text(browser, 'tbody[data-table="listings"]')
    assert "Tiny MLP, verified" in listings and "40 steps verified" in listings
    assert text(browser, '[data-fact="verified"]') == "1"


def _audit(browser: WebDriver) -> None:
    assert text(browser, '[data-fact="signature_check"]') == "valid"
    assert int(text(browser, '[data-fact="head_size"]').replace(",", "")) > 0

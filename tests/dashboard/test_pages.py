"""The dashboard's pages as the server renders them (Flask test client, no browser): each
page answers 200 with the network's facts in it, agrees with the JSON view it polls and
with the REST API, unknown jobs and providers are 404 problems, and a page without the
script bundle still renders, saying how to build it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from markupsafe import escape

from node.gateway import GatewayConfig, Services, create_app, dashboard
from node.gateway.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from node.gateway.services import EXTENSION
from protocol.assets import Asset, to_display
from protocol.compute import ComputeParams
from protocol.fees import settle_segment
from protocol.storage import sqlite_storage
from tests.dashboard.world import CHEATER, DEVELOPER, HONEST, MODEL_NAME, PRICE, PageWorld, build

UNKNOWN_JOB = "00000000-0000-0000-0000-000000000000"


def open_gateway(root: Path) -> tuple[FlaskClient, Services]:
    app = create_app(
        GatewayConfig(
            storage=sqlite_storage(root / "data"),
            operator_key_path=root / "data" / "operator.pem",
            blob_dir=root / "blobs",
            dev=True,
        )
    )
    return app.test_client(), app.extensions[EXTENSION]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageWorld]:
    """The page tests' network, built once: the tests only read it."""
    client, services = open_gateway(tmp_path_factory.mktemp("dashboard-pages"))
    try:
        yield build(client, services.chain_id, services.operator)
    finally:
        services.close()


def page(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def view(client: FlaskClient, path: str) -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict)
    return body


def facts(body: dict[str, Any]) -> dict[str, str]:
    return {name: c["text"] for name, c in body["facts"].items()}


def column(body: dict[str, Any], table: str, index: int) -> list[str]:
    return [row[index]["text"] for row in body["tables"][table]]


def assert_problem(response: Any, status: int, slug: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_MEDIA_TYPE
    assert response.get_json()["type"] == PROBLEM_BASE + slug


PAGES = {
    "overview": ("/ui/", "/ui/data/overview"),
    "job": ("/ui/jobs/{job}", "/ui/data/jobs/{job}"),
    "provider": ("/ui/providers/{honest}", "/ui/data/providers/{honest}"),
    "accounts": ("/ui/accounts", "/ui/data/accounts"),
    "account": ("/ui/accounts/{developer}", "/ui/data/accounts/{developer}"),
    "market": ("/ui/market", "/ui/data/market"),
    "audit": ("/ui/audit", "/ui/data/audit"),
}


def paths(world: PageWorld, name: str) -> tuple[str, str]:
    html, data = PAGES[name]
    names = {"job": world.job, "honest": HONEST.address, "developer": DEVELOPER.address}
    return html.format(**names), data.format(**names)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_renders_every_fact_and_row_of_the_view_it_polls(
    world: PageWorld, name: str
) -> None:
    """Every page answers 200 HTML holding each value and table cell of its JSON view
    (escaped), names that view as its live source, and carries a content security policy
    that keeps every script and style on this origin."""
    html_path, data_path = paths(world, name)
    response = world.client.get(html_path)
    assert response.status_code == 200
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    assert f'data-source="{data_path}"' in html
    body = view(world.client, data_path)
    for key, value in facts(body).items():
        if key != "updated":  # the clock, read once per request
            assert f'data-fact="{key}"' in html, key
            assert str(escape(value)) in html, (key, value)
    for table, rows in body["tables"].items():
        assert f'data-table="{table}"' in html, table
        for row in rows:
            for c in row:
                assert str(escape(c["text"])) in html, (table, c)


def test_the_front_page_redirects_to_the_network_page(world: PageWorld) -> None:
    """GET / sends a browser to /ui/."""
    response = world.client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/ui/")


def test_the_network_page_counts_providers_gpus_jobs_and_the_caught_cheat(
    world: PageWorld,
) -> None:
    """The overview counts both providers but only the active one's GPUs (the cheater is
    jailed), the verifiers, the completed job, the verified steps and the fraud ruling."""
    body = view(world.client, "/ui/data/overview")
    found = facts(body)
    assert (found["providers"], found["providers_active"]) == ("2", "1 active")
    assert (found["gpus"], found["gpus_total"]) == ("2", "of 4 registered")
    assert found["verifiers"] == "2"
    assert found["jobs"] == "1" and "1 completed" in found["jobs_running"]
    assert found["steps_verified"] == "4"
    assert found["disputes_open"] == "0 open · 1 fraud"
    statuses = dict(zip(column(body, "providers", 1), column(body, "providers", 3), strict=True))
    assert statuses == {"NVIDIA H100": "active", "cpu": "jailed"}
    assert column(body, "jobs", 3) == ["completed"]
    assert column(body, "disputes", 5) == ["fraud"]
    (bar,) = body["charts"]["throughput"]["series"]
    assert sum(value for _, value in bar["points"]) == 4


def test_a_job_page_shows_its_segments_verdicts_dispute_and_loss_curve(world: PageWorld) -> None:
    """The job page shows the job completed with both segments accepted and one re-lease,
    the cheater's rejected commitment and the fraud ruling with its slash, and the loss
    curve of the verified segments (1.0 down by 1/16 a step) beside the rejected one."""
    html = page(world.client, f"/ui/jobs/{world.job}")
    assert world.job in html
    body = view(world.client, f"/ui/data/jobs/{world.job}")
    found = facts(body)
    assert found["status"] == "completed"
    assert (found["segments_accepted"], found["steps_verified"]) == ("2 / 2", "4 / 4")
    assert found["requeues"] == "1"
    assert found["loss_last"] == "0.8125"
    assert body["meters"]["segments"] == {"value": 2, "max": 2, "text": "2 of 2"}
    assert [b["tone"] for b in body["timelines"]["segments"]] == ["ok", "ok"]
    assert column(body, "segments", 2) == ["accepted", "accepted"]
    assert column(body, "segments", 5) == ["1", "2"]  # the cheated segment was leased twice
    assert sorted(column(body, "commitments", 3)) == ["accepted", "accepted", "fraud"]
    assert "state hash mismatch after re-execution" in html
    (dispute,) = body["tables"]["disputes"]
    assert [dispute[4]["text"], dispute[6]["text"]] == ["fraud", "10 BLACK"]
    series = {s["label"]: s["points"] for s in body["charts"]["loss"]["series"]}
    assert series["verified"] == [[1, 1.0], [2, 0.9375], [3, 0.875], [4, 0.8125]]
    assert series["rejected (fraud)"] == [[3, 0.875], [4, 0.8125]]
    assert series["awaiting verification"] == []


def test_a_provider_page_shows_stake_earnings_and_reputation(world: PageWorld) -> None:
    """The honest provider's page shows its stake, its share of both segments' payments
    (the fee schedule's, as paid), its reputation and the leases it held; the cheater's
    shows it jailed, rejected once and slashed."""
    body = view(world.client, f"/ui/data/providers/{HONEST.address}")
    found = facts(body)
    share = settle_segment(2 * PRICE, Asset.BLACK, ComputeParams().fees).provider
    assert found["earned"] == f"{to_display(2 * share, Asset.BLACK)} BLACK"
    assert found["stake"] == "20 BLACK"
    assert (found["status"], found["accepted"], found["rejected"]) == ("active", "2", "0")
    assert found["reputation"] == "75.0%"
    assert column(body, "segments", 4) == [f"{to_display(share, Asset.BLACK)} BLACK"] * 2
    assert len(body["tables"]["leases"]) == 2
    page(world.client, f"/ui/providers/{HONEST.address}")

    cheater = facts(view(world.client, f"/ui/data/providers/{CHEATER.address}"))
    assert (cheater["status"], cheater["rejected"], cheater["slashed"]) == (
        "jailed",
        "1",
        "10 BLACK",
    )
    assert cheater["stake"] == "10 BLACK"


def test_the_balances_pages_agree_with_the_accounts_api(world: PageWorld) -> None:
    """Every known account is listed with its roles, and an account's page shows each of
    its buckets as GET /accounts/<address>/balances does (display and base units)."""
    body = view(world.client, "/ui/data/accounts")
    roles = dict(zip(column(body, "accounts", 0), column(body, "accounts", 1), strict=True))
    assert roles["treasury"] == roles["vault"] == "system"
    assert sorted(roles.values()).count("provider") == 2
    assert "developer, creator" in roles.values()
    for who in (HONEST.address, DEVELOPER.address, "treasury"):
        html = page(world.client, f"/ui/accounts/{who}")
        api = world.get(f"/accounts/{who}/balances")["balances"]
        assert api, who
        for item in api:
            assert item["display"] in html and str(item["amount"]) in html, item


def test_an_address_looked_up_is_shown_on_its_page(world: PageWorld) -> None:
    """The lookup form sends a lower-case address to its checksummed account page; a
    malformed one is a 400 problem."""
    response = world.client.get(f"/ui/accounts?address={HONEST.address.lower()}")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/ui/accounts/{HONEST.address}")
    assert_problem(world.client.get("/ui/accounts?address=0x12"), 400, "invalid-input")


def test_the_marketplace_lists_the_model_escaped(world: PageWorld) -> None:
    """The listed model is on the marketplace page with its price and creator; its name,
    which holds markup, is shown as text."""
    html = page(world.client, "/ui/market")
    assert str(escape(MODEL_NAME)) in html and MODEL_NAME not in html
    body = view(world.client, "/ui/data/market")
    (row,) = body["tables"]["listings"]
    assert [row[0]["text"], row[3]["text"], row[4]["text"], row[8]["text"]] == [
        MODEL_NAME,
        "3 BLACK",
        "none",
        "listed",
    ]
    assert facts(body)["listings"] == "1"


def test_the_audit_page_checks_each_anchor_against_the_log(tmp_path: Path) -> None:
    """An epoch anchoring the log's own root at its size is consistent; one anchoring
    another root is a mismatch, named as the latest epoch's status; the tree head's
    signature checks out against the operator."""
    client, services = open_gateway(tmp_path)
    try:
        world = PageWorld(client, services.chain_id, services.operator)
        assert facts(view(client, "/ui/data/audit"))["audit_status"] == "no epoch settled yet"
        world.settle(1)
        found = facts(view(client, "/ui/data/audit"))
        assert (found["epoch"], found["audit_status"]) == ("1", "consistent")
        assert found["signature_check"] == "valid"
        head = world.get("/tree-head")
        assert found["head_root"] == head["root"] and found["head_size"] == str(head["size"])
        world.settle(2, log_root="0x" + "12" * 32)
        body = view(client, "/ui/data/audit")
        found = facts(body)
        assert (found["epoch"], found["audit_status"]) == ("2", "mismatch")
        assert found["epochs_failed"] == "1"
        assert column(body, "epochs", 5) == ["mismatch", "consistent"]
        assert "mismatch" in page(client, "/ui/audit")
    finally:
        services.close()


@pytest.mark.parametrize(
    "path, status, slug",
    [
        (f"/ui/jobs/{UNKNOWN_JOB}", 404, "not-found"),
        ("/ui/jobs/not-a-job", 404, "not-found"),
        (f"/ui/data/jobs/{UNKNOWN_JOB}", 404, "not-found"),
        (f"/ui/providers/{DEVELOPER.address}", 404, "not-found"),
        (f"/ui/data/providers/{DEVELOPER.address}", 404, "not-found"),
        ("/ui/providers/0x1234", 400, "invalid-input"),
        ("/ui/accounts/0x1234", 400, "invalid-input"),
        ("/ui/static/no-such-file.js", 404, "not-found"),
        ("/ui/static/../dashboard.py", 404, "not-found"),
    ],
)
def test_unknown_jobs_providers_and_files_are_problems(
    world: PageWorld, path: str, status: int, slug: str
) -> None:
    """A job, provider or file that does not exist is a 404 problem (a malformed address
    a 400), for pages and their JSON alike; nothing outside static/ is served."""
    assert_problem(world.client.get(path), status, slug)


def test_a_browser_asking_for_an_unknown_job_gets_the_problem_as_a_page(world: PageWorld) -> None:
    """With Accept: text/html the 404 is an HTML page stating the problem; the JSON view
    stays a problem whatever the Accept header says."""
    accept = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    response = world.client.get(f"/ui/jobs/{UNKNOWN_JOB}", headers=accept)
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert f"no job {UNKNOWN_JOB}".lower() in response.get_data(as_text=True).lower()
    data = world.client.get(f"/ui/data/jobs/{UNKNOWN_JOB}", headers=accept)
    assert_problem(data, 404, "not-found")


def test_a_page_without_the_bundle_renders_and_says_how_to_build_it(
    world: PageWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without static/dist/dashboard.js a page still renders its facts, loads no script,
    and says that live updates need `make dashboard`; with it, the page loads the bundle
    (versioned by its modification time) and says nothing of the kind."""
    monkeypatch.setattr(dashboard, "BUNDLE", tmp_path / "missing.js")
    html = page(world.client, f"/ui/jobs/{world.job}")
    assert "make dashboard" in html and 'id="bundle-missing"' in html
    assert "<script" not in html
    assert "completed" in html

    built = tmp_path / "dashboard.js"
    built.write_text("/* a bundle */")
    monkeypatch.setattr(dashboard, "BUNDLE", built)
    html = page(world.client, f"/ui/jobs/{world.job}")
    assert 'id="bundle-missing"' not in html
    assert re.search(r'<script defer src="/ui/static/dist/dashboard\.js\?v=\d+"></script>', html)


def test_the_stylesheet_and_icon_are_served_from_this_origin(world: PageWorld) -> None:
    """The stylesheet and icon the pages link to are served by the gateway itself."""
    html = page(world.client, "/ui/")
    for path, mimetype in (
        ("/ui/static/dashboard.css", "text/css"),
        ("/ui/static/favicon.svg", "image/svg+xml"),
    ):
        assert f'href="{path}"' in html
        response = world.client.get(path)
        assert (response.status_code, response.mimetype) == (200, mimetype)
    assert "http://" not in html.replace("http://www.w3.org", "")
    assert "https://" not in html


def test_the_openapi_document_describes_the_dashboard(world: PageWorld) -> None:
    """The dashboard's routes are in /openapi.json: pages as text/html, views with the
    View schema."""
    document = world.get("/openapi.json")
    paths_ = document["paths"]
    assert "text/html" in paths_["/ui/jobs/{job}"]["get"]["responses"]["200"]["content"]
    schema = paths_["/ui/data/jobs/{job}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    assert schema == {"$ref": "#/components/schemas/View"}
    assert "404" in paths_["/ui/data/jobs/{job}"]["get"]["responses"]

"""`blacktail market` and `blacktail hub`: sell, buy and download models; subscribe to the
GenAI Hub and run its models (specs/market.md).

Every command that changes something is signed here with the key given by --key; a
purchase and a subscription sign the price the gateway shows, so a price changed in
between is refused rather than charged. Downloads are checked against the artifact's
SHA-256 before they are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from node.cli.common import json_option, out
from node.cli.remote import (
    Remote,
    base_units,
    command_seconds,
    gateway_option,
    key_option,
    load_key,
    print_facts,
    report,
)
from node.client import SAFETENSORS, GatewayError
from protocol.assets import Asset, parse_asset, to_display
from protocol.commands import sign_command
from protocol.errors import ProtocolError
from protocol.hub import input_digest
from protocol.market import LICENSES, TASKS, sign_download_request

chunk_bytes = 1024 * 1024
download_seconds = 600


def _price(value: int, asset: str) -> str:
    return "free" if not value else f"{to_display(value, Asset(asset))} {asset}"


def _short(text: str) -> str:
    return text[:8]


def _asset(text: str) -> Asset:
    try:
        return parse_asset(text.upper(), "--asset")
    except ProtocolError as error:
        raise click.BadParameter(str(error), param_hint="--asset") from None


# -- market ------------------------------------------------------------------------------


@click.group()
def market() -> None:
    """DMarket: list, buy and download the models trained on the network."""


@market.command("list")
@gateway_option
@click.option("--creator", default=None, help="Only this creator's listings.")
@click.option("--task", type=click.Choice(TASKS), default=None)
@click.option("--all", "show_all", is_flag=True, help="Include delisted models.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@json_option
def market_list(
    gateway: str,
    creator: str | None,
    task: str | None,
    show_all: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Show the models for sale: price, license, provenance, rating."""
    remote = Remote(gateway)
    query = {"limit": str(limit)}
    if creator:
        query["creator"] = creator
    if task:
        query["task"] = task
    if not show_all:
        query["status"] = "listed"
    page = remote.get("/market/listings?" + urllib.parse.urlencode(query))

    def render(p: dict[str, Any]) -> None:
        # Narrow enough for 80 columns: `market show` has the rest. The id is what
        # `market buy` takes, so it is never wrapped or cut.
        table = Table(title="models for sale", title_justify="left")
        table.add_column("listing", no_wrap=True, min_width=36)
        for column in ("name", "price", "verified", "rating"):
            table.add_column(column, overflow="fold")
        for item in p["items"]:
            provenance = item["provenance"]
            table.add_row(
                item["id"],
                item["name"] + (" (hub)" if item["hub"] else ""),
                _price(item["price"], item["currency"]),
                "-" if provenance is None else f"{provenance['verified_steps']} steps",
                "-" if item["rating"] is None else f"{item['rating']} ({item['rating_count']})",
            )
        out.print(table)

    report(as_json, page, render)


@market.command("show")
@gateway_option
@click.argument("listing")
@json_option
def market_show(gateway: str, listing: str, as_json: bool) -> None:
    """Show one listing, with the verification record of the job that trained it."""
    found = Remote(gateway).get(f"/market/listings/{listing}")

    def render(item: dict[str, Any]) -> None:
        facts: dict[str, Any] = {
            "name": item["name"],
            "creator": item["creator"],
            "artifact": item["artifact"],
            "price": _price(item["price"], item["currency"]),
            "license": item["license"]
            + (f" ({item['license_text']})" if item["license_text"] else ""),
            "status": item["status"],
            "sales": item["sales"],
            "hub": "yes" if item["hub"] else "no",
        }
        provenance = item["provenance"]
        if provenance is not None:
            verdicts = provenance["verdicts"]
            facts["provenance"] = (
                f"job {provenance['job']}, {provenance['segments']} segments, "
                f"{provenance['verified_steps']} steps ({provenance['reexecuted_steps']} "
                f"re-executed), {verdicts['accepted']} accepted + "
                f"{verdicts['cleared_on_dispute']} cleared on dispute"
            )
            facts["royalty"] = f"{item['royalty_bps'] / 100:.2f}% to its providers"
        print_facts(f"listing {item['id']}", facts)

    report(as_json, found, render)


@market.command("sell")
@gateway_option
@key_option
@click.argument("artifact_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True)
@click.option("--task", type=click.Choice(TASKS), default="classification", show_default=True)
@click.option("--license", "license_name", type=click.Choice(LICENSES), default="MIT")
@click.option("--license-text", default="", help="Terms of a custom license.")
@click.option("--description", default="")
@click.option("--price", default="0", show_default=True, help="In display units; 0: free.")
@click.option("--asset", default="BLACK", show_default=True)
@click.option("--job", default="", help="The completed job that trained it (provenance).")
@click.option("--royalty-bps", type=click.IntRange(0, 10_000), default=0, show_default=True)
@click.option("--hub/--no-hub", default=False, help="Serve it through the GenAI Hub.")
@click.option("--request-price", default="0", help="Hub price per request without a subscription.")
@json_option
def market_sell(
    gateway: str,
    key_path: Path,
    artifact_file: Path,
    name: str,
    task: str,
    license_name: str,
    license_text: str,
    description: str,
    price: str,
    asset: str,
    job: str,
    royalty_bps: int,
    hub: bool,
    request_price: str,
    as_json: bool,
) -> None:
    """Upload a safetensors model and list it for sale."""
    remote = Remote(gateway, key_path)
    currency = _asset(asset)
    hasher = hashlib.sha256()
    with artifact_file.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            hasher.update(chunk)
    digest = "0x" + hasher.hexdigest()
    try:
        remote.client.put_blob(digest, artifact_file, SAFETENSORS)
    except GatewayError as error:
        raise click.ClickException(str(error)) from None
    result = remote.command(
        "/market/listings",
        "ListModel",
        {
            "artifact": digest,
            "name": name,
            "task": task,
            "license": license_name,
            "licenseText": license_text,
            "description": description,
            "price": base_units(price, currency, "--price"),
            "asset": currency.value,
            "royaltyBps": royalty_bps,
            "provenanceJob": job,
            "hub": hub,
            "requestPrice": base_units(request_price, currency, "--request-price"),
        },
    )
    report(as_json, result, lambda r: out.print(f"listed {r['outcome']['listing']} ({digest})"))


@market.command("buy")
@gateway_option
@key_option
@click.argument("listing")
@json_option
def market_buy(gateway: str, key_path: Path, listing: str, as_json: bool) -> None:
    """Buy a license to a model at the price it is listed at now."""
    remote = Remote(gateway, key_path)
    found = remote.get(f"/market/listings/{listing}")
    result = remote.command(
        f"/market/listings/{listing}/purchase",
        "BuyModel",
        {"listing": listing, "price": found["price"], "asset": found["currency"]},
    )
    report(
        as_json,
        result,
        lambda r: out.print(
            f"bought {found['name']} ({listing}) for {_price(found['price'], found['currency'])}"
            f"; license {found['license']}"
        ),
    )


@market.command("download")
@gateway_option
@click.option(
    "--key",
    "key_path",
    envvar="BLACKTAIL_KEY",
    type=click.Path(path_type=Path),
    metavar="PEM",
    help="The buyer's key (paid models).  [env: BLACKTAIL_KEY]",
)
@click.argument("listing")
@click.option("--out", "target", required=True, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def market_download(
    gateway: str, key_path: Path | None, listing: str, target: Path, as_json: bool
) -> None:
    """Download a model's artifact (a paid one with a token the buyer's key asks for),
    checking its SHA-256."""
    remote = Remote(gateway)
    found = remote.get(f"/market/listings/{listing}")
    path = f"/market/listings/{listing}/artifact"
    if found["price"]:
        if key_path is None:
            raise click.UsageError("a paid model is downloaded with its buyer's --key")
        key = load_key(key_path)
        expiry = int(time.time()) + 60
        signature = sign_download_request(key, remote.chain_id, found["id"], expiry)
        token = remote.post(
            f"/market/listings/{listing}/token",
            {"buyer": key.address, "expiry": expiry, "signature": signature},
        )
        path = token["url"]
    size = _download(gateway.rstrip("/") + path, found["artifact"], target)
    facts = {
        "listing": found["id"],
        "artifact": found["artifact"],
        "bytes": size,
        "path": str(target),
    }
    report(as_json, facts, lambda f: out.print(f"downloaded {f['bytes']} bytes to {f['path']}"))


def _download(url: str, digest: str, target: Path) -> int:
    """Stream `url` to `target` (atomically), refusing bytes that do not hash to `digest`."""
    temporary = target.with_name(target.name + ".part")
    hasher = hashlib.sha256()
    size = 0
    try:
        with (
            urllib.request.urlopen(url, timeout=download_seconds) as response,
            temporary.open("wb") as handle,
        ):
            while chunk := response.read(chunk_bytes):
                hasher.update(chunk)
                handle.write(chunk)
                size += len(chunk)
        if "0x" + hasher.hexdigest() != digest.lower():
            raise click.ClickException(
                f"the download hashes to 0x{hasher.hexdigest()}, not to the artifact {digest}"
            )
    except urllib.error.HTTPError as error:
        temporary.unlink(missing_ok=True)
        raise click.ClickException(
            f"{error.code}: {error.read()[:300].decode('replace')}"
        ) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, target)
    return size


# -- hub ---------------------------------------------------------------------------------


@click.group()
def hub() -> None:
    """The GenAI Hub: one subscription, every hub model, metered on the ledger."""


@hub.command("plans")
@gateway_option
@json_option
def hub_plans(gateway: str, as_json: bool) -> None:
    """Show the subscription plans."""
    state = Remote(gateway).get("/hub")

    def render(s: dict[str, Any]) -> None:
        table = Table(title="hub plans", title_justify="left")
        for column in ("plan", "BLACK", "USD", "period", "quota", "sold"):
            table.add_column(column)
        for plan in s["plans"]:
            table.add_row(
                plan["plan"],
                _price(plan["prices"]["BLACK"], "BLACK"),
                _price(plan["prices"]["USD"], "USD"),
                f"{plan['period_seconds'] / 86400:g} days",
                str(plan["quota"]),
                "yes" if plan["active"] else "no",
            )
        out.print(table)

    report(as_json, state, render)


@hub.command("subscribe")
@gateway_option
@key_option
@click.argument("plan")
@click.option("--asset", default="BLACK", show_default=True, help="Pay in BLACK or USD.")
@json_option
def hub_subscribe(gateway: str, key_path: Path, plan: str, asset: str, as_json: bool) -> None:
    """Subscribe for one period of a plan at its price now."""
    remote = Remote(gateway, key_path)
    currency = _asset(asset)
    plans = {p["plan"]: p for p in remote.get("/hub")["plans"]}
    if plan not in plans:
        raise click.ClickException(f"no plan {plan!r}; plans: {', '.join(sorted(plans)) or 'none'}")
    price = plans[plan]["prices"][currency.value]
    result = remote.command(
        "/hub/subscriptions", "Subscribe", {"plan": plan, "asset": currency.value, "price": price}
    )
    report(
        as_json,
        result,
        lambda r: out.print(
            f"subscribed to {plan} for {_price(price, currency.value)}: "
            f"{r['outcome']['quota']} requests until {r['outcome']['ends_at']}"
        ),
    )


@hub.command("predict")
@gateway_option
@key_option
@click.argument("listing")
@click.option(
    "--input",
    "inputs_text",
    required=True,
    help="Rows of features as JSON ([[0.1, 0.2, ...], ...]), or @FILE holding them.",
)
@json_option
def hub_predict(
    gateway: str, key_path: Path, listing: str, inputs_text: str, as_json: bool
) -> None:
    """Run a hub model on rows of inputs (metered: subscription or pay-per-request)."""
    remote = Remote(gateway, key_path)
    if inputs_text.startswith("@"):
        inputs_text = Path(inputs_text[1:]).read_text()
    try:
        inputs = json.loads(inputs_text)
        digest = input_digest(inputs)
    except (ValueError, TypeError, ProtocolError) as error:
        raise click.BadParameter(str(error), param_hint="--input") from None
    key = load_key(key_path)
    message = {
        "listing": listing,
        "inputDigest": digest,
        "clientId": f"cli-{secrets.token_hex(8)}",
        "nonce": secrets.randbits(63),
        "expiry": int(time.time()) + command_seconds,
    }
    try:
        signed = sign_command(key, "HubRequest", remote.chain_id, message)
    except ProtocolError as error:
        raise click.ClickException(str(error)) from None
    result = remote.post(
        f"/hub/models/{listing}/predict", {"command": signed.to_json(), "inputs": inputs}
    )

    def render(r: dict[str, Any]) -> None:
        metering = r["metering"]
        how = (
            f"subscription: {metering['used']}/{metering['quota']} requests used"
            if metering["metering"] == "subscription"
            else f"paid {_price(metering['charged'], metering['currency'])}"
        )
        out.print(f"predictions: {r['predictions']}  ({how})")

    report(as_json, result, render)

"""GET /accounts/<address> and GET /accounts/<address>/balances.

An address is read strictly (EIP-55 checksum checked when mixed case); the system
accounts `treasury` and `vault` are named instead. An account that never received
anything is not an error: it has no balances.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.services import Services
from protocol.assets import Asset, to_display
from protocol.keys import parse_address
from protocol.ledger import SYSTEM_ACCOUNTS


class AccountSchema(ma.Schema):
    account = ma.fields.String(required=True, metadata={"description": "EIP-55 address"})
    system = ma.fields.Boolean(required=True, metadata={"description": "treasury or vault"})
    opened = ma.fields.Boolean(
        required=True, metadata={"description": "Whether anything was ever posted to it"}
    )
    version = ma.fields.Integer(
        required=True, metadata={"description": "Events recorded for it (0 when not opened)"}
    )


class BalanceSchema(ma.Schema):
    asset = ma.fields.String(required=True)
    bucket = ma.fields.String(required=True)
    amount = ma.fields.Integer(
        required=True, metadata={"description": "Base units: a JSON integer of any size"}
    )
    display = ma.fields.String(
        required=True, metadata={"description": "The amount in whole units, e.g. 12.5"}
    )


class BalancesSchema(ma.Schema):
    account = ma.fields.String(required=True)
    balances = ma.fields.List(
        ma.fields.Nested(BalanceSchema),
        required=True,
        metadata={"description": "Every non-zero bucket, by asset then bucket"},
    )


def account_name(value: str) -> str:
    """The ledger's name of an account given in a URL."""
    return value if value in SYSTEM_ACCOUNTS else parse_address(value, "address")


def balance_items(balances: dict[str, int]) -> list[dict[str, Any]]:
    items = []
    for key, amount in sorted(balances.items()):
        asset, bucket = key.split("/", 1)
        items.append(
            {
                "asset": asset,
                "bucket": bucket,
                "amount": amount,
                "display": to_display(amount, Asset(asset)),
            }
        )
    return items


def blueprint(services: Services) -> GatewayBlueprint:
    blp = GatewayBlueprint("accounts", __name__, description="Ledger accounts")
    network = services.network

    @blp.route("/accounts/<address>")
    @blp.response(200, AccountSchema)
    @documents_problems(blp, 400)
    def get_account(address: str) -> dict[str, Any]:
        """An account's identity and version (balances: /accounts/<address>/balances)."""
        name = account_name(address)
        account = network.account(name)
        return {
            "account": name,
            "system": name in SYSTEM_ACCOUNTS,
            "opened": account is not None,
            "version": 0 if account is None else account.version,
        }

    @blp.route("/accounts/<address>/balances")
    @blp.response(200, BalancesSchema)
    @documents_problems(blp, 400)
    def get_balances(address: str) -> dict[str, Any]:
        """Every non-zero bucket of an account, in base units and for display."""
        name = account_name(address)
        return {"account": name, "balances": balance_items(network.balances(name))}

    return blp

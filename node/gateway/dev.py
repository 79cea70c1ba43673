"""Development-only endpoints, registered only when the gateway runs with dev on.

POST /dev/deposit credits an account as if a Vault deposit had been seen on-chain: the
gateway signs a Deposit with the operator key and submits it like any other command,
so it lands in the log and passes the audit. It mints funds: never on a real network.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import marshmallow as ma

from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.commands import CommandResultSchema, submit_command
from node.gateway.services import Services
from protocol.assets import Asset, amount_max
from protocol.commands import sign_command

deposit_expiry_seconds = 600


class DevDepositSchema(ma.Schema):
    account = ma.fields.String(required=True, metadata={"description": "EIP-55 address"})
    asset = ma.fields.String(required=True, validate=ma.validate.OneOf([a.value for a in Asset]))
    amount = ma.fields.Integer(
        strict=True,
        required=True,
        validate=ma.validate.Range(min=1, max=amount_max),
        metadata={"description": "Base units: a JSON integer of any size"},
    )


def blueprint(services: Services) -> GatewayBlueprint:
    blp = GatewayBlueprint("dev", __name__, description="Development only (dev mode)")

    @blp.route("/dev/deposit", methods=["POST"])
    @blp.arguments(DevDepositSchema)
    @blp.response(201, CommandResultSchema, description="The operator-signed Deposit, applied")
    @documents_problems(blp, 400, 415)
    def deposit(body: dict[str, Any]) -> dict[str, Any]:
        """Credit an account with an operator-signed Deposit (dev mode only)."""
        reference = secrets.token_hex(32)
        command = sign_command(
            services.operator,
            "Deposit",
            services.chain_id,
            {
                "account": body["account"],
                "asset": body["asset"],
                "amount": body["amount"],
                "chainRef": f"{services.chain_id}:0x{reference}:0",
                "clientId": f"dev-deposit-{reference[:24]}",
                # 128 random bits: operator nonces only need to be distinct.
                "nonce": secrets.randbits(128) + 1,
                "expiry": int(time.time()) + deposit_expiry_seconds,
            },
        )
        result = submit_command(services, command)
        services.metrics.count_command("Deposit", "accepted")
        return result.to_json()

    return blp

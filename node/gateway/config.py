"""The gateway's configuration.

Values come from explicit arguments first, then `BLACKTAIL_*` environment variables,
then the defaults below; a bad value raises InvalidInput naming the variable (or the
argument) and the value. Limits are named with their unit last.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar

from node.blobs import DEFAULT_BLOB_BYTES_MAX
from node.hub_models import DEVICES
from node.operator import DEFAULT_CHAIN_ID, OPERATOR_KEY_FILE
from protocol import application
from protocol.compute import ComputeParams
from protocol.errors import InvalidInput
from protocol.storage import DEFAULT_DATA_DIR, Storage, postgres_storage, sqlite_storage

T = TypeVar("T")
BLOB_DIR = "blobs"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_PROTOCOL_DEFAULTS = ComputeParams()


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything one gateway process needs; build it with `resolve` to read the
    environment, or directly (tests)."""

    storage: Storage
    operator_key_path: Path
    blob_dir: Path
    chain_id: int = DEFAULT_CHAIN_ID
    # Dev-only endpoints (POST /dev/deposit mints funds): never on a real network.
    dev: bool = False
    request_bytes_max: int = 1024 * 1024
    blob_bytes_max: int = DEFAULT_BLOB_BYTES_MAX
    page_items_max: int = 1000
    page_items_default: int = 100
    batch_commands_max: int = 1000
    # The largest model the market lists and the hub loads into a worker's memory.
    artifact_bytes_max: int = DEFAULT_BLOB_BYTES_MAX
    # Where the hub runs its models: auto (a GPU when torch sees one), cpu or cuda.
    hub_device: str = "auto"
    # The compute protocol's clocks (specs/compute.md, Parameters). Every gateway on one
    # store must use the same values; tests shorten them to see leases lapse, verdicts
    # and rulings go overdue, and unopened commitments punished, within seconds.
    lease_seconds: int = _PROTOCOL_DEFAULTS.lease_seconds
    opening_seconds: int = _PROTOCOL_DEFAULTS.opening_seconds
    verdict_seconds: int = _PROTOCOL_DEFAULTS.verdict_seconds
    dispute_seconds: int = _PROTOCOL_DEFAULTS.dispute_seconds
    # How often the operator's sweeper looks for what is overdue.
    sweep_seconds: int = 5
    # How long a freshly started gateway waits before its first sweep: agents that were
    # waiting out its restart reconnect and post what fell due meanwhile (openings,
    # verdicts, heartbeats count until swept) before anything is punished for it.
    sweep_grace_seconds: int = 60

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise InvalidInput(
                    f"{field.name}: expected a positive integer, got {value!r}", field=field.name
                )
        if self.page_items_default > self.page_items_max:
            raise InvalidInput(
                f"page_items_default: {self.page_items_default} exceeds page_items_max "
                f"{self.page_items_max}",
                field="page_items_default",
            )
        if self.hub_device not in DEVICES:
            raise InvalidInput(
                f"hub_device: one of {', '.join(DEVICES)}, got {self.hub_device!r}",
                field="hub_device",
            )
        if self.batch_commands_max > application.batch_commands_max:
            raise InvalidInput(
                f"batch_commands_max: {self.batch_commands_max} exceeds the ledger's "
                f"{application.batch_commands_max}",
                field="batch_commands_max",
            )

    @classmethod
    def resolve(
        cls,
        *,
        data_dir: Path | None = None,
        dsn: str | None = None,
        operator_key_path: Path | None = None,
        blob_dir: Path | None = None,
        chain_id: int | None = None,
        dev: bool | None = None,
        request_bytes_max: int | None = None,
        blob_bytes_max: int | None = None,
        page_items_max: int | None = None,
        page_items_default: int | None = None,
        batch_commands_max: int | None = None,
        artifact_bytes_max: int | None = None,
        hub_device: str | None = None,
        lease_seconds: int | None = None,
        opening_seconds: int | None = None,
        verdict_seconds: int | None = None,
        dispute_seconds: int | None = None,
        sweep_seconds: int | None = None,
        sweep_grace_seconds: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> GatewayConfig:
        """The configuration from these arguments, else the environment, else defaults.

        The data directory (BLACKTAIL_DATA_DIR, default ./.blacktail) holds the SQLite
        store unless a PostgreSQL DSN is given (BLACKTAIL_DB), the operator key
        (BLACKTAIL_OPERATOR_KEY, default DATA_DIR/operator.pem) and the blobs
        (BLACKTAIL_BLOB_DIR, default DATA_DIR/blobs).
        """
        env = os.environ if environ is None else environ
        data_dir = data_dir or Path(env.get("BLACKTAIL_DATA_DIR") or DEFAULT_DATA_DIR)
        dsn = dsn or env.get("BLACKTAIL_DB") or None
        storage = postgres_storage(dsn) if dsn else sqlite_storage(data_dir)

        def number(value: int | None, name: str) -> int:
            default = cls.__dataclass_fields__[name].default
            assert isinstance(default, int), name
            return _pick(value, env, f"BLACKTAIL_{name.upper()}", _positive_int, default)

        return cls(
            storage=storage,
            operator_key_path=_pick(
                operator_key_path, env, "BLACKTAIL_OPERATOR_KEY", Path, data_dir / OPERATOR_KEY_FILE
            ),
            blob_dir=_pick(blob_dir, env, "BLACKTAIL_BLOB_DIR", Path, data_dir / BLOB_DIR),
            chain_id=number(chain_id, "chain_id"),
            dev=_pick(dev, env, "BLACKTAIL_DEV", _boolean, False),
            request_bytes_max=number(request_bytes_max, "request_bytes_max"),
            blob_bytes_max=number(blob_bytes_max, "blob_bytes_max"),
            page_items_max=number(page_items_max, "page_items_max"),
            page_items_default=number(page_items_default, "page_items_default"),
            batch_commands_max=number(batch_commands_max, "batch_commands_max"),
            artifact_bytes_max=number(artifact_bytes_max, "artifact_bytes_max"),
            hub_device=_pick(hub_device, env, "BLACKTAIL_HUB_DEVICE", _device, "auto"),
            lease_seconds=number(lease_seconds, "lease_seconds"),
            opening_seconds=number(opening_seconds, "opening_seconds"),
            verdict_seconds=number(verdict_seconds, "verdict_seconds"),
            dispute_seconds=number(dispute_seconds, "dispute_seconds"),
            sweep_seconds=number(sweep_seconds, "sweep_seconds"),
            sweep_grace_seconds=number(sweep_grace_seconds, "sweep_grace_seconds"),
        )

    def compute_params(self) -> ComputeParams:
        """The protocol parameters of this gateway's network: the defaults, with its clocks."""
        return replace(
            _PROTOCOL_DEFAULTS,
            lease_seconds=self.lease_seconds,
            opening_seconds=self.opening_seconds,
            verdict_seconds=self.verdict_seconds,
            dispute_seconds=self.dispute_seconds,
        )


def _pick(
    explicit: T | None, env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T
) -> T:
    if explicit is not None:
        return explicit
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return parse(text)
    except ValueError as error:
        raise InvalidInput(f"{name}: {text!r}: {error}", field=name) from None


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise ValueError("expected a positive integer")
    return int(text)


def _device(text: str) -> str:
    if text not in DEVICES:
        raise ValueError(f"expected one of {', '.join(DEVICES)}")
    return text


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}")

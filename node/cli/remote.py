"""Options and helpers for the sub-commands that talk to a gateway: its URL, the key that
signs, and one way to sign, send and report a command."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from node.cli.common import emit_json, out
from node.client import GatewayClient, GatewayError
from protocol.assets import Asset, to_base_units
from protocol.commands import sign_command
from protocol.errors import ProtocolError
from protocol.keys import PrivateKey

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_GATEWAY = "http://127.0.0.1:8700"
command_seconds = 600


def gateway_option(func: F) -> F:
    return click.option(
        "--gateway",
        envvar="BLACKTAIL_GATEWAY",
        default=DEFAULT_GATEWAY,
        show_default=True,
        metavar="URL",
        help="The gateway to talk to.  [env: BLACKTAIL_GATEWAY]",
    )(func)


def key_option(func: F) -> F:
    return click.option(
        "--key",
        "key_path",
        envvar="BLACKTAIL_KEY",
        required=True,
        type=click.Path(path_type=Path),
        metavar="PEM",
        help="Key file that signs the command (`blacktail keys new`).  [env: BLACKTAIL_KEY]",
    )(func)


def load_key(path: Path) -> PrivateKey:
    try:
        return PrivateKey.load(path)
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such key file") from None
    except ProtocolError as error:
        raise click.ClickException(f"{path}: {error}") from None


def address_of(address: str | None, key_path: Path | None, option: str = "an ADDRESS") -> str:
    """The address a command is about: given outright, or that of a key file."""
    if address is not None:
        return address
    if key_path is None:
        raise click.UsageError(f"give {option} or --key")
    return load_key(key_path).address


def base_units(text: str, asset: Asset, option: str) -> int:
    """An amount typed in display units (`2.5`), in base units; a bad one names the option."""
    try:
        return to_base_units(text, asset)
    except ProtocolError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


class Remote:
    """A gateway and, optionally, the key that signs for this invocation."""

    def __init__(self, gateway: str, key_path: Path | None = None) -> None:
        self.client = GatewayClient(gateway)
        self.gateway = gateway
        self.key = load_key(key_path) if key_path is not None else None
        self._chain_id: int | None = None

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.get("/health")["chain_id"])
        return self._chain_id

    def get(self, path: str) -> Any:
        return self._call(lambda: self.client.get_json(path))

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._call(lambda: self.client.post_json(path, dict(body)))

    def command(
        self,
        path: str,
        kind: str,
        fields: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
        client_id: str | None = None,
    ) -> Any:
        """Sign `fields` as a `kind` command and POST it to `path`, with `extra` as the
        request's unsigned context (a SubmitJob's spec)."""
        if self.key is None:
            raise click.ClickException("this command needs --key")
        message = dict(fields)
        message["clientId"] = client_id or f"cli-{secrets.token_hex(8)}"
        message["nonce"] = secrets.randbits(63)
        message["expiry"] = int(time.time()) + command_seconds
        try:
            signed = sign_command(self.key, kind, self.chain_id, message)
        except ProtocolError as error:
            raise click.ClickException(str(error)) from None
        body = signed.to_json()
        if extra:
            body["context"] = dict(extra)
        return self.post(path, body)

    def _call(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except GatewayError as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:
            raise click.ClickException(f"cannot reach {self.gateway}: {error}") from None


def report(as_json: bool, value: Any, render: Callable[[Any], None]) -> None:
    """Print `value` as JSON for machines, or with `render` for people."""
    if as_json:
        emit_json(value)
    else:
        render(value)


def print_facts(title: str, facts: Mapping[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in facts.items():
        table.add_row(name, "" if value is None else str(value))
    out.print(table)

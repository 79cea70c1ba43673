"""`blacktail keys`: make a node key, show its address, sign EIP-712 typed data.

The key file is PEM, readable by its owner only (0600). Every failure a person can cause
(a missing file, a bad key, a bad document) ends with one line on stderr and exit status 1,
never a traceback: a traceback would hide the reason behind our internals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from protocol.eip712 import (
    document_from_json,
    document_json_bytes_max,
    hash_typed_data,
)
from protocol.errors import InvalidInput
from protocol.keys import PrivateKey

# No exists/dir_okay checks here: click would report them as usage errors over three
# lines, while the commands below report every file problem on one line.
_KEY_PATH = click.Path(path_type=Path)


def _load_key(path: Path) -> PrivateKey:
    try:
        return PrivateKey.load(path)
    except FileNotFoundError as exc:
        raise click.ClickException(f"{path}: no such key file") from exc
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read: {exc.strerror}") from exc


def _read_document(source: str) -> dict[str, Any]:
    """Read a document from a path, or from stdin for `-`, reading one byte past the limit."""
    try:
        # click.open_file reads stdin (in binary mode) for "-" and leaves it open after.
        with click.open_file(source, "rb") as file:
            data = file.read(document_json_bytes_max + 1)
    except FileNotFoundError as exc:
        raise click.ClickException(f"{source}: no such file") from exc
    except OSError as exc:
        raise click.ClickException(f"{source}: cannot read: {exc.strerror}") from exc
    try:
        return document_from_json(data)
    except InvalidInput as exc:
        raise click.ClickException(f"{_label(source)}: {exc}") from exc


def _label(source: str) -> str:
    return "stdin" if source == "-" else source


def _emit(as_json: bool, facts: dict[str, str], line: str) -> None:
    click.echo(json.dumps(facts, sort_keys=True) if as_json else line)


@click.group()
def keys() -> None:
    """Node keys: secp256k1, stored as PEM (0600), identified by an Ethereum address.

    \b
    Example:
      blacktail keys new --out me.pem
      blacktail keys sign-typed-data me.pem command.json
    """


@keys.command("new")
@click.option(
    "--out",
    "out",
    required=True,
    type=_KEY_PATH,
    help="Where to write the new key (PEM, mode 0600); must not exist yet.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead.")
def new(out: Path, as_json: bool) -> None:
    """Generate a new key, save it to a new file and print its address.

    The file is created readable by you only (0600); an existing file is never
    overwritten, so an old key (and the funds behind it) cannot be lost by accident.

    \b
    Example:
      blacktail keys new --out provider.pem
      blacktail keys new --out provider.pem --json
    """
    key = PrivateKey.generate()
    try:
        key.save(out)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{out}: cannot write: {exc.strerror}") from exc
    if not as_json:
        click.echo(f"wrote {out} (mode 0600)", err=True)
    _emit(as_json, {"address": key.address, "path": str(out)}, key.address)


@keys.command("address")
@click.argument("key_file", metavar="KEY.pem", type=_KEY_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead.")
def address(key_file: Path, as_json: bool) -> None:
    """Print the EIP-55 address of the key in KEY.pem.

    \b
    Example:
      blacktail keys address provider.pem
    """
    key = _load_key(key_file)
    _emit(as_json, {"address": key.address, "path": str(key_file)}, key.address)


@keys.command("sign-typed-data")
@click.argument("key_file", metavar="KEY.pem", type=_KEY_PATH)
@click.argument("document", metavar="FILE.json")
@click.option("--json", "as_json", is_flag=True, help="Print signer, digest and signature.")
def sign_typed_data_command(key_file: Path, document: str, as_json: bool) -> None:
    """Sign an EIP-712 document and print the 65-byte signature as 0x-hex.

    FILE.json has the eth_signTypedData_v4 shape: {"types": {...}, "primaryType": ...,
    "domain": {...}, "message": {...}}; use - to read it from stdin. The signature is
    r ‖ s ‖ v with v in {27, 28}, the same bytes any Ethereum wallet would produce.

    \b
    Example:
      blacktail keys sign-typed-data provider.pem command.json
      cat command.json | blacktail keys sign-typed-data provider.pem - --json
    """
    key = _load_key(key_file)
    doc = _read_document(document)
    try:
        digest = hash_typed_data(doc)
    except InvalidInput as exc:
        raise click.ClickException(f"{_label(document)}: invalid typed data: {exc}") from exc
    signature = key.sign_digest(digest)
    facts = {
        "signer": key.address,
        "digest": "0x" + digest.hex(),
        "signature": "0x" + signature.hex(),
    }
    _emit(as_json, facts, facts["signature"])

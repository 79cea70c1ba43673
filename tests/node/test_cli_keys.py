"""`blacktail keys`, driven through the real entry point with click's test runner."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data

from node.cli import main

DOCUMENT = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
        ],
        "Transfer": [
            {"name": "to", "type": "address"},
            {"name": "amount", "type": "uint256"},
            {"name": "nonce", "type": "uint64"},
        ],
    },
    "primaryType": "Transfer",
    "domain": {"name": "BlackTail", "version": "1", "chainId": 31337},
    "message": {
        "to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "amount": "1000000000000000000",
        "nonce": 1,
    },
}


def _run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["keys", *args], input=stdin)


def _assert_one_line_failure(result: Result, needle: str) -> None:
    """The command failed with exit 1 and exactly one line on stderr, and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key.pem"
    assert _run("new", "--out", str(path)).exit_code == 0
    return path


@pytest.fixture
def document_file(tmp_path: Path) -> Path:
    path = tmp_path / "transfer.json"
    path.write_text(json.dumps(DOCUMENT))
    return path


def test_new_address_and_sign_typed_data_agree_with_eth_account(
    tmp_path: Path, document_file: Path
) -> None:
    """new, address, sign-typed-data: the signature recovers in eth-account to the address."""
    key_path = tmp_path / "provider.pem"
    created = _run("new", "--out", str(key_path), "--json")
    assert created.exit_code == 0, created.output
    facts = json.loads(created.stdout)
    assert facts["path"] == str(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    shown = _run("address", str(key_path))
    assert shown.exit_code == 0
    assert shown.stdout.strip() == facts["address"]

    signed = _run("sign-typed-data", str(key_path), str(document_file), "--json")
    assert signed.exit_code == 0, signed.output
    result = json.loads(signed.stdout)
    signable = encode_typed_data(full_message=DOCUMENT)
    assert result["signer"] == facts["address"]
    assert result["digest"] == "0x" + bytes(_hash_eip191_message(signable)).hex()
    signature = bytes.fromhex(result["signature"].removeprefix("0x"))
    assert len(signature) == 65
    assert Account.recover_message(signable, signature=signature) == facts["address"]


def test_plain_outputs_are_bare_values_for_scripts(key_file: Path, document_file: Path) -> None:
    """Without --json, address prints the address and sign-typed-data the 0x signature alone."""
    address = _run("address", str(key_file)).stdout.strip()
    assert json.loads(_run("address", str(key_file), "--json").stdout)["address"] == address
    signed = _run("sign-typed-data", str(key_file), str(document_file))
    assert signed.exit_code == 0
    signature = signed.stdout.strip()
    assert signature.startswith("0x") and len(signature) == 2 + 130
    assert signed.stdout.count("\n") == 1


def test_sign_typed_data_reads_the_document_from_stdin(key_file: Path, document_file: Path) -> None:
    """`-` reads the document from stdin and signs the same bytes as the file."""
    from_file = _run("sign-typed-data", str(key_file), str(document_file))
    from_stdin = _run("sign-typed-data", str(key_file), "-", stdin=json.dumps(DOCUMENT))
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout == from_file.stdout


def test_new_refuses_to_overwrite_an_existing_key(key_file: Path) -> None:
    """new onto an existing file fails in one line and leaves the old key in place."""
    before = key_file.read_bytes()
    _assert_one_line_failure(_run("new", "--out", str(key_file)), "refusing to overwrite")
    assert key_file.read_bytes() == before


def test_new_reports_an_unwritable_location(tmp_path: Path) -> None:
    """new into a missing directory fails in one line."""
    _assert_one_line_failure(
        _run("new", "--out", str(tmp_path / "missing" / "key.pem")), "cannot write"
    )


def test_address_refuses_a_key_file_others_can_read(key_file: Path) -> None:
    """A key file with mode 0644 is refused with the chmod to fix it."""
    key_file.chmod(0o644)
    _assert_one_line_failure(_run("address", str(key_file)), "chmod 600")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such key file"),
        (b"not a key\n", "not a PEM private key"),
        (b"", "not a PEM private key"),
    ],
)
def test_address_reports_a_missing_or_malformed_key(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    """A missing file or a file that is no PEM key fails in one line."""
    path = tmp_path / "key.pem"
    if content is not None:
        path.write_bytes(content)
        path.chmod(0o600)
    _assert_one_line_failure(_run("address", str(path)), needle)


def test_address_reports_a_directory_in_one_line(tmp_path: Path) -> None:
    """A directory given as the key file is a one-line error, not a usage screen."""
    _assert_one_line_failure(_run("address", str(tmp_path)), "cannot read")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{", "document is not JSON"),
        ("[]", "must be a JSON object"),
        ('{"a": 1, "a": 2}', "duplicate key"),
        (json.dumps(DOCUMENT).replace('"nonce": 1', '"nonce": -1'), "message.nonce"),
        (json.dumps({**DOCUMENT, "primaryType": "Mail"}), "primaryType"),
    ],
)
def test_sign_typed_data_reports_bad_documents_in_one_line(
    key_file: Path, tmp_path: Path, text: str, needle: str
) -> None:
    """Malformed JSON and invalid typed data fail in one line naming the problem."""
    path = tmp_path / "bad.json"
    path.write_text(text)
    _assert_one_line_failure(_run("sign-typed-data", str(key_file), str(path)), needle)


def test_sign_typed_data_reports_a_missing_document(key_file: Path, tmp_path: Path) -> None:
    """A document path that does not exist fails in one line."""
    missing = tmp_path / "nope.json"
    _assert_one_line_failure(_run("sign-typed-data", str(key_file), str(missing)), "no such file")


def test_every_command_has_help_with_an_example() -> None:
    """--help on each keys command shows an example invocation."""
    for command in ("new", "address", "sign-typed-data"):
        result = _run(command, "--help")
        assert result.exit_code == 0
        assert "Example:" in result.stdout
        assert f"blacktail keys {command}" in result.stdout

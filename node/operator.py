"""The operator's identity on this node: the chain id it runs and the key that signs its
tree heads and operator-only commands, kept as a PEM file in the data directory."""

from __future__ import annotations

from pathlib import Path

from protocol.errors import InvalidInput
from protocol.keys import PrivateKey

OPERATOR_KEY_FILE = "operator.pem"
DEFAULT_CHAIN_ID = 31337


class OperatorKeyMissing(FileNotFoundError):
    """There is no operator key where one was expected, and making one was not allowed."""


def load_operator_key(path: Path, *, create: bool) -> PrivateKey:
    """The key at `path`; made (mode 0600) on first use when `create` is true.

    Raises OperatorKeyMissing when the file is absent and `create` is false, and
    InvalidInput when the file is not a key.
    """
    if not path.exists():
        if not create:
            raise OperatorKeyMissing(f"no operator key at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        key = PrivateKey.generate()
        try:
            key.save(path)
        except InvalidInput:
            # Another process made it between our check and our write (save never
            # overwrites): theirs is the operator key now.
            pass
        else:
            return key
    return PrivateKey.load(path)

"""Assets the ledger holds and conversions between display units and base units.

Amounts are integers of base units everywhere inside the protocol; decimals exist only
at the edges, for people.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from enum import StrEnum

from protocol.errors import InvalidInput


class Asset(StrEnum):
    """An asset the ledger can hold, by its ticker."""

    BLACK = "BLACK"
    USD = "USD"

    @property
    def decimals(self) -> int:
        return _DECIMALS[self]


_DECIMALS = {Asset.BLACK: 18, Asset.USD: 6}

# The largest amount any single leg may carry: the uint256 range of the EVM, so every
# ledger amount fits the contracts that finalize it.
amount_max = 2**256 - 1


def parse_asset(value: str, field: str = "asset") -> Asset:
    """Return the asset named `value`, or raise InvalidInput naming `field`."""
    try:
        return Asset(value)
    except ValueError:
        known = ", ".join(a.value for a in Asset)
        raise InvalidInput(
            f"{field}: unknown asset {value!r} (known: {known})", field=field
        ) from None


def parse_amount(value: object, field: str = "amount", *, allow_zero: bool = False) -> int:
    """Return `value` as a base-unit integer in range, or raise InvalidInput naming `field`.

    Accepts an int or a decimal string of digits; booleans and floats are refused because
    they are almost always a caller's mistake.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInput(f"{field}: expected an integer of base units", field=field)
    if isinstance(value, str):
        # isascii: str.isdigit also accepts other scripts' digits ("١٢"), which int() reads.
        if not (value.isascii() and value.isdigit()) or len(value) > 78:
            raise InvalidInput(f"{field}: {value!r} is not a decimal integer", field=field)
        value = int(value)
    if value < 0 or value > amount_max or (value == 0 and not allow_zero):
        raise InvalidInput(f"{field}: {value} is out of range", field=field)
    return value


def to_base_units(display: str, asset: Asset) -> int:
    """Convert a display amount such as "12.5" into base units of `asset`, exactly."""
    try:
        quantity = Decimal(display)
    except InvalidOperation:
        raise InvalidInput(f"{display!r} is not a number", field="amount") from None
    scaled = quantity.scaleb(asset.decimals)
    if scaled != scaled.to_integral_value() or scaled < 0:
        raise InvalidInput(f"{display} {asset} is not a whole number of base units", field="amount")
    return int(scaled)


def to_display(amount: int, asset: Asset) -> str:
    """Format base units of `asset` as a plain decimal string, trailing zeros removed."""
    whole, fraction = divmod(amount, 10**asset.decimals)
    if fraction == 0:
        return str(whole)
    digits = str(fraction).rjust(asset.decimals, "0").rstrip("0")
    return f"{whole}.{digits}"

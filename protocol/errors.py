"""The protocol's exception tree.

Every error raised on purpose by `protocol` derives from `ProtocolError`, and the narrow
ones also derive from the builtin they resemble, so callers can catch either. Each error
carries the structured facts (account, asset, needed, ...) as attributes, for the API
layer to turn into problem bodies without parsing messages.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error the protocol raises on purpose."""


class InvalidInput(ProtocolError, ValueError):
    """A value is malformed: a bad address, a negative amount, an unknown asset."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidSignature(ProtocolError, ValueError):
    """A signature is malformed, malleable (high s) or recovers to no valid key."""


class WrongSigner(InvalidSignature):
    """A well-formed signature recovers to an address other than the claimed signer."""

    def __init__(self, expected: str, recovered: str) -> None:
        super().__init__(f"signature recovers to {recovered}, not to the signer {expected}")
        self.expected = expected
        self.recovered = recovered


class WrongChainId(ProtocolError, ValueError):
    """A command was signed for another chain (another network or a test chain)."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"command is for chain id {got}, this network is chain id {expected}")
        self.expected = expected
        self.got = got


class CommandExpired(ProtocolError, ValueError):
    """A command arrived after the expiry its signer put in it."""

    def __init__(self, expiry: int, now: int) -> None:
        super().__init__(f"command expired at {expiry}, it is now {now}")
        self.expiry = expiry
        self.now = now


class NonceReplayed(ProtocolError, ValueError):
    """A nonce was already used by this signer for another command."""

    def __init__(self, signer: str, nonce: int) -> None:
        super().__init__(f"nonce {nonce} of {signer} was already used")
        self.signer = signer
        self.nonce = nonce


class IdempotencyConflict(ProtocolError, ValueError):
    """A client id was reused with a payload other than the first one."""

    def __init__(self, signer: str, client_id: str) -> None:
        super().__init__(f"client id {client_id} of {signer} was used for another command")
        self.signer = signer
        self.client_id = client_id


class InsufficientFunds(ProtocolError, ValueError):
    """A posting would take a bucket below zero."""

    def __init__(self, account: str, asset: str, bucket: str, needed: int, available: int) -> None:
        super().__init__(
            f"{account} has {available} {asset} base units in {bucket}, {needed} needed"
        )
        self.account = account
        self.asset = asset
        self.bucket = bucket
        self.needed = needed
        self.available = available


class UnbalancedPosting(ProtocolError, ValueError):
    """A posting set whose debits and credits differ for some asset."""

    def __init__(self, asset: str, debits: int, credits: int) -> None:
        super().__init__(f"posting set is unbalanced in {asset}: debits {debits} != {credits}")
        self.asset = asset
        self.debits = debits
        self.credits = credits


class LedgerCorrupted(ProtocolError, AssertionError):
    """A recorded event breaks an invariant that was checked before it was recorded: the
    store was damaged or forged. Raised where state is read back, never caught to go on."""


class InvalidProof(ProtocolError, ValueError):
    """A Merkle inclusion or consistency proof does not check out."""


class AuditFailure(ProtocolError):
    """Replaying an exported log found a line that breaks the log or an invariant."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"position {position}: {reason}")
        self.position = position
        self.reason = reason


class NotFound(ProtocolError, LookupError):
    """A command or query names something that does not exist (a job, a lease, a provider)."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"no {what} {key}")
        self.what = what
        self.key = key


class InvalidTransition(ProtocolError, ValueError):
    """A well-formed command that the current state does not allow: cancelling a completed
    job, leasing from a job with nothing queued, a verdict from a verifier not assigned."""

    def __init__(
        self, message: str, *, entity: str | None = None, state: str | None = None
    ) -> None:
        super().__init__(message)
        self.entity = entity
        self.state = state


class LeaseExpired(InvalidTransition):
    """A lease's deadline has passed (or it was closed): its holder's heartbeat or late
    result is refused, and the segment goes back to the queue."""

    def __init__(self, lease: str, deadline: int, now: int) -> None:
        super().__init__(
            f"lease {lease} expired at {deadline}, it is now {now}", entity="lease", state="expired"
        )
        self.lease = lease
        self.deadline = deadline
        self.now = now

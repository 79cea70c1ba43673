"""The verifier's exception tree: one root, narrow subclasses that also subclass a builtin."""

from __future__ import annotations


class VerifierError(Exception):
    """Root of every error the verifier raises on purpose."""


class InvalidState(VerifierError, ValueError):
    """A training state (often a provider's untrusted file) does not fit the job's model.

    `tensor` names the offending tensor ("step" for the step counter), or is None when the
    set of tensor names itself is wrong.
    """

    def __init__(self, message: str, *, tensor: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor


class InvalidBatch(VerifierError, ValueError):
    """Training examples or labels do not fit the model (shape, dtype or label range)."""


class InconsistentGateway(VerifierError, ValueError):
    """A gateway's answer that the verifier cannot build a verdict on: it contradicts what
    the verifier computed itself (a sample, a beacon, a spec that does not hash to its
    job's digest) or does not have the documented shape. It says nothing about the
    provider, so the verifier posts nothing on it and tries again later."""

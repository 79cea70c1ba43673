"""OpenAPI links in the gateway's document: from an answer to the operations that read
what it made (a stored blob read back, a signer's balances, a new job, listing or
provider looked up, a tree head's size asked for a consistency proof).

flask-smorest writes no links, so an apispec plugin adds them to each source operation's
success responses as the document is built. Clients and the fuzzer's stateful scenarios
(tests/stress/test_fuzz_api.py) follow them. A link names its target by `operationRef`, a
JSON pointer into this document, and fills the target's parameters with runtime
expressions (`$response.body#/...`, `$request.body#/...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apispec import BasePlugin

# A command's answer (specs/api.md): the signer, and the outcome's identifiers.
_SIGNER = "$response.body#/signer"


@dataclass(frozen=True)
class Link:
    source: str
    method: str
    statuses: tuple[str, ...]
    target: str
    target_method: str
    parameters: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        """The link's name in the source response: the target's method and path."""
        words = self.target.strip("/").replace("{", "").replace("}", "").replace("-", "_")
        return f"{self.target_method}_{words.replace('/', '_')}"

    @property
    def operation_ref(self) -> str:
        escaped = self.target.replace("~", "~0").replace("/", "~1")
        return f"#/paths/{escaped}/{self.target_method}"

    def to_json(self) -> dict[str, Any]:
        return {"operationRef": self.operation_ref, "parameters": dict(self.parameters)}


def _command(source: str, target: str, parameter: str, expression: str) -> Link:
    """A signed command's route (200: a retry's first answer, 201: applied) to a read."""
    return Link(source, "post", ("200", "201"), target, "get", ((parameter, expression),))


LINKS: tuple[Link, ...] = (
    Link(
        "/blobs/{digest}",
        "put",
        ("200", "201"),
        "/blobs/{digest}",
        "get",
        (("path.digest", "$response.body#/digest"),),
    ),
    *(
        Link(
            "/dev/deposit",
            "post",
            ("201",),
            target,
            "get",
            (("path.address", "$request.body#/account"),),
        )
        for target in ("/accounts/{address}/balances", "/accounts/{address}", "/stake/{address}")
    ),
    _command("/commands", "/accounts/{address}/balances", "path.address", _SIGNER),
    _command("/providers", "/providers/{address}", "path.address", _SIGNER),
    _command("/verifiers", "/verifiers/{address}", "path.address", _SIGNER),
    _command("/jobs", "/jobs/{job}", "path.job", "$response.body#/outcome/job"),
    _command("/jobs", "/jobs/{job}/segments", "path.job", "$response.body#/outcome/job"),
    _command(
        "/market/listings",
        "/market/listings/{listing}",
        "path.listing",
        "$response.body#/outcome/listing",
    ),
    _command(
        "/market/listings",
        "/market/listings/{listing}/provenance",
        "path.listing",
        "$response.body#/outcome/listing",
    ),
    _command("/hub/subscriptions", "/hub/subscriptions/{address}", "path.address", _SIGNER),
    Link(
        "/tree-head",
        "get",
        ("200",),
        "/tree-head/consistency",
        "get",
        (("query.from", "$response.body#/size"),),
    ),
    Link(
        "/tree-head",
        "get",
        ("200",),
        "/events",
        "get",
        (("query.cursor", "$response.body#/size"),),
    ),
)


class ResponseLinks(BasePlugin):
    """Adds `links` to the success responses of each operation that is a link's source."""

    def __init__(self, links: tuple[Link, ...] = LINKS) -> None:
        self.links = links

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if path is None or not operations:
            return
        for link in self.links:
            operation = operations.get(link.method)
            if link.source != path or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for status in link.statuses:
                key = next((k for k in responses if str(k) == status), status)
                response = responses.setdefault(key, {"description": "Success"})
                if isinstance(response, dict):
                    response.setdefault("links", {})[link.name] = link.to_json()

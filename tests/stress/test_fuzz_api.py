"""The REST API fuzzed from its own OpenAPI document (schemathesis), against a real gunicorn
gateway: every operation with data that fits its schema and data that does not, then
chains of calls along links (issue 8, §3).

A fuzzer's signatures never verify, so its commands would all stop at the signature
check. To reach the layers behind it, a command body whose generated message the protocol
can sign is re-signed here with a funded key (the operator's for operator-only kinds), so
that messages of every shape go on to the state machine; a blob body is put under its
own digest half the time, so that some uploads are stored and their links followed.

Every answer must be below 500; every 4xx must be an RFC 7807 problem
(application/problem+json with its type, title and the same status); and an answer of
400 or more must leave the event log as it was.
"""

from __future__ import annotations

import copy
import hashlib
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode, Response
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput

from node.gateway.links import LINKS
from protocol.commands import KINDS, sign_command
from protocol.errors import ProtocolError
from protocol.keys import PrivateKey
from tests.gateway_server import RunningGateway, run_gateway

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://blacktail.dev/problems/"
# Examples per operation and generation mode: about a minute for the whole API here.
examples_per_operation = 8
stateful_scenarios = 20
stateful_steps_max = 6
request_seconds = 30
blob_bytes_max = 64 * 1024
# The keys the fuzzer signs with (the operator's too, for operator-only kinds): funded,
# so that a generated command can get as far as the state it meets.
ACCOUNTS = [PrivateKey.from_bytes((0xF0225 + n).to_bytes(32, "big")) for n in range(3)]
# Whole-API operations whose answer is not JSON or not about the API (the UI's pages, the
# document itself) are fuzzed like the rest; nothing is excluded.


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gunicorn gateway with dev endpoints and a 64 KiB blob limit; the fuzzer's key
    holds BLACK and USD."""
    with run_gateway(
        tmp_path_factory.mktemp("fuzz"), env={"BLACKTAIL_BLOB_BYTES_MAX": str(blob_bytes_max)}
    ) as running:
        with running.client() as client:
            for account in ACCOUNTS:
                for asset, amount in (("BLACK", 10**24), ("USD", 10**12)):
                    client.post_json(
                        "/dev/deposit",
                        {"account": account.address, "asset": asset, "amount": amount},
                    )
        yield running


@pytest.fixture(scope="module")
def document(gateway: RunningGateway) -> dict[str, Any]:
    """The gateway's own OpenAPI document, as it serves it."""
    with gateway.client() as client:
        served: dict[str, Any] = client.get_json("/openapi.json")
    return served


class Fuzzer:
    """Sends cases to the gateway and judges each answer."""

    def __init__(self, gateway: RunningGateway, seed: int) -> None:
        self.gateway = gateway
        self.session = requests.Session()
        self.calls = 0
        self.size: int | None = None
        self.rng = random.Random(seed)
        self.statuses: dict[int, int] = {}

    def log_size(self) -> int:
        answer = self.session.get(self.gateway.base_url + "/tree-head", timeout=request_seconds)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["size"])

    def prepare(self, case: Case, positive: bool) -> None:
        """Re-sign a command body the protocol can sign; name a blob by its digest; give
        a dev deposit a real account (all only for data meant to fit the schema)."""
        body = case.body
        if not positive:
            return
        if isinstance(body, dict) and isinstance(body.get("message"), dict):
            self._resign(case, body)
        elif isinstance(getattr(body, "data", None), bytes) and "digest" in (
            case.path_parameters or {}
        ):
            case.path_parameters = {"digest": hashlib.sha256(body.data).hexdigest()}
        elif isinstance(body, dict) and case.path == "/dev/deposit":
            case.body = {**body, "account": self.rng.choice(ACCOUNTS).address}

    def _resign(self, case: Case, body: dict[str, Any]) -> None:
        message = dict(body["message"])
        kind = KINDS.get(body.get("kind"))  # type: ignore[arg-type]
        names = set(message)
        if kind is None or {name for name, _ in kind.all_fields} != names:
            # The document's message is a oneOf over every kind: find the kind whose
            # fields these are, if any.
            kind = next(
                (k for k in KINDS.values() if {name for name, _ in k.all_fields} == names), kind
            )
        if kind is None:
            return
        # Fresh replay fields, so that a message is judged on its own fields and not
        # merely refused as expired or replayed.
        message |= {
            "clientId": f"fuzz-{self.rng.getrandbits(64):016x}",
            "nonce": self.rng.getrandbits(63),
            "expiry": int(time.time()) + 600,
        }
        key = self.gateway.operator if kind.operator_only else self.rng.choice(ACCOUNTS)
        try:
            command = sign_command(key, kind.name, self.gateway.chain_id, message)
        except (ProtocolError, TypeError, ValueError, OverflowError):
            return  # unsignable: the gateway must refuse it on its own
        case.body = {**body, **command.to_json()}

    def exercise(self, case: Case, positive: bool) -> Response:
        self.prepare(case, positive)
        # Nothing but these calls writes to the log (nothing is overdue for the sweeper),
        # so the size after one call is the size before the next.
        if self.size is None:
            self.size = self.log_size()
        before = self.size
        response = case.call(
            base_url=self.gateway.base_url, session=self.session, timeout=request_seconds
        )
        self.calls += 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        self.size = self.log_size()
        judge(case, response, before, self.size)
        return response


def judge(case: Case, response: Response, before: int, after: int) -> None:
    """No 5xx; a 4xx is a problem with its type, title and status; a refusal records
    nothing."""
    status = response.status_code
    where = f"{case.method} {case.formatted_path}: {status}\n{case.as_curl_command()}"
    assert status < 500, f"{where}\n{response.text[:1000]}"
    if status >= 400:
        assert after == before, f"{where}: a refused request changed the log"
        if case.method.upper() == "HEAD":
            return
        media_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
        assert media_type == PROBLEM_MEDIA_TYPE, f"{where}: answered {media_type!r}"
        problem = response.json()
        assert isinstance(problem, dict), where
        assert isinstance(problem.get("type"), str), where
        # A status without a type of its own is RFC 7807's "about:blank".
        assert problem["type"] == "about:blank" or problem["type"].startswith(PROBLEM_BASE), (
            f"{where}: {problem}"
        )
        assert isinstance(problem.get("title"), str) and problem["title"], f"{where}: {problem}"
        assert problem.get("status") == status, f"{where}: {problem}"


def fuzz(fuzzer: Fuzzer, operation: APIOperation, mode: GenerationMode) -> None:
    """Send `examples_per_operation` cases of `operation` in `mode`; a failure shrinks
    to the smallest case that still fails, printed with a curl line to replay it."""
    positive = mode is GenerationMode.POSITIVE

    @settings(
        max_examples=examples_per_operation,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        fuzzer.exercise(case, positive)

    try:
        run()
    except Unsatisfiable:
        # Hypothesis proved that no case of this mode exists: nothing to send.
        assert not positive, f"no valid input for {operation.label}"


def negatable(operation: APIOperation) -> bool:
    """Whether data that breaks the operation's schema exists: a body, or a parameter
    that is not a plain string (any text is a valid plain string, and hypothesis would
    spend seconds proving that before giving up)."""
    if list(operation.body):
        return True
    return any(
        parameter.definition.get("schema", {}).get("type") != "string"
        or parameter.definition.get("schema", {}).get("pattern")
        for parameter in operation.iter_parameters()
    )


def test_every_operation_answers_fuzzed_input_without_5xx_and_with_problems(
    gateway: RunningGateway, document: dict[str, Any], seed: int
) -> None:
    """Each operation of the OpenAPI document, fed examples that fit its schema and
    examples that break it, never answers 5xx, answers every 4xx with a valid problem
    body, and changes the log only when it accepts."""
    schema = schemathesis.openapi.from_dict(copy.deepcopy(document))
    fuzzer = Fuzzer(gateway, seed)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40, "the document lost its operations"
    for operation in operations:
        fuzz(fuzzer, operation, GenerationMode.POSITIVE)
        if negatable(operation):
            fuzz(fuzzer, operation, GenerationMode.NEGATIVE)
    print(f"{fuzzer.calls} fuzzed calls; statuses {dict(sorted(fuzzer.statuses.items()))}")
    # The re-signing must let some commands through, or the fuzz never got past the
    # signature check.
    assert fuzzer.statuses.get(201, 0) > 0


def test_chains_of_calls_along_links_answer_without_5xx_and_with_problems(
    gateway: RunningGateway, document: dict[str, Any], seed: int
) -> None:
    """Scenarios along the links of the gateway's own document (node/gateway/links.py: a
    stored blob read back, a deposit's account looked up, a new job or listing read, a
    tree head's size asked for a consistency proof and a page of events) keep to the same
    rules: no 5xx, problems for 4xx, refusals record nothing."""
    schema = schemathesis.openapi.from_dict(document)
    fuzzer = Fuzzer(gateway, seed)
    assert schema.statistic.transitions.total >= len(LINKS)
    followed: dict[str, int] = {}
    answered: dict[str, bool] = {}

    class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
        def step(self, input: StepInput) -> StepOutput:
            response = fuzzer.exercise(input.case, positive=True)
            if input.transition is not None and input.is_applied:
                followed[input.case.operation.label] = (
                    followed.get(input.case.operation.label, 0) + 1
                )
                if response.status_code < 400:
                    answered[input.case.operation.label] = True
            return StepOutput(response, input.case)

    Scenarios.run(
        settings=settings(
            max_examples=stateful_scenarios,
            stateful_step_count=stateful_steps_max,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    print(f"{fuzzer.calls} calls in scenarios; statuses {dict(sorted(fuzzer.statuses.items()))}")
    print(f"links followed: {followed}")
    # Links were followed with values from real answers, and some of those reads found
    # what the earlier call made (a stored blob, a funded account, a log position).
    assert followed and any(answered.values()), followed

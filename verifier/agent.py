"""The verifier agent: judge the commitments assigned to one key, referee its disputes.

Each pass (`run_once`) reads the key's work from GET /tasks and does all of it:

- **a verdict** for each pending commitment assigned to it: when the provider has opened
  its sample (an unopened one waits, and past its opening deadline is left to the
  operator's sweep, which punishes it as fraud), the agent derives the sample itself
  from the root, the beacon and its own address and requires the gateway's to be the
  same, proves the beacon from the signed log (`verifier.beacon`, unless turned off),
  then judges the openings (`verifier.verdict`) and signs `PostVerdict`: accepted, or
  rejected naming the first failing sampled transition;
- **a ruling** for each open dispute it referees: it re-checks the accused transition
  the same way against the sample the accuser posted and signs `RuleDispute`, fraud when
  that check fails (an absent or invalid opening included), cleared when it passes.

`run` repeats passes until stopped, sleeping between passes that found nothing to post.
An operating error (the gateway unreachable or restarting, a refused command, a dataset
that cannot be fetched: the `transient_errors` the caller names) or a gateway answer the
agent cannot trust (`InconsistentGateway`) costs only the task at hand, which the next
pass tries again; nothing is kept between passes that the gateway does not hold, so a
restarted agent picks up where it stopped. Commands carry client ids derived from the
commitment or dispute, so a verdict or ruling sent twice is recorded once.

This package imports only `protocol` and `verifier`: the HTTP client and the dataset
fetcher are passed in (`node.cli.verifier` passes the gateway client and
`node.datasets.fetch`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from protocol.commands import sign_command
from protocol.errors import ProtocolError
from protocol.jobspec import JobSpec, parse_job_spec
from protocol.keys import PrivateKey
from protocol.sampling import sample_indices
from verifier.beacon import LogWitness
from verifier.errors import InconsistentGateway, VerifierError
from verifier.reexecute import DEFAULT_BOUNDS, Device, Examples, ToleranceBounds
from verifier.verdict import BlobSource, CommitmentFacts, Finding, clip, judge

log = logging.getLogger(__name__)
command_seconds = 600
# Bounds on what the agent keeps between tasks: job specs are small; datasets are the
# whole training set each, so only the last few jobs' are kept.
specs_cached_max = 256
datasets_cached_max = 2
# GET /tasks answers at most 100 verdicts and 100 rulings; one pass does at most that.
tasks_per_pass_max = 200


class Gateway(BlobSource, Protocol):
    """What the agent needs of a gateway client (`node.client.GatewayClient` has it)."""

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any: ...

    def post_json(self, path: str, body: Any) -> Any: ...


FetchDataset = Callable[[str], Examples]


@dataclass(frozen=True, slots=True)
class TaskReport:
    """One verdict or ruling the agent posted."""

    kind: Literal["verdict", "ruling"]
    id: str  # the commitment (verdict) or the dispute (ruling)
    commitment: str
    job: str
    steps: tuple[int, ...]  # the transitions judged (re-executed unless the manifest failed)
    outcome: Literal["accepted", "rejected", "fraud", "cleared"]
    failed_step: int | None
    reason: str
    seconds: float

    def line(self) -> str:
        """The one line a person reads about it."""
        what = "commitment" if self.kind == "verdict" else "dispute"
        text = (
            f"{self.kind} {what} {self.id}: {self.outcome}, "
            f"{len(self.steps)} sampled steps checked, {self.seconds:.2f} s"
        )
        return text + (f" ({self.reason})" if self.reason else "")

    def to_json(self) -> dict[str, Any]:
        facts = asdict(self)
        facts["steps"] = list(self.steps)
        return facts


@dataclass
class Summary:
    """What an agent has done since it started."""

    accepted: int = 0
    rejected: int = 0
    fraud: int = 0
    cleared: int = 0
    steps_checked: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def posted(self) -> int:
        return self.accepted + self.rejected + self.fraud + self.cleared

    def add(self, report: TaskReport) -> None:
        setattr(self, report.outcome, getattr(self, report.outcome) + 1)
        self.steps_checked += len(report.steps)
        self.seconds += report.seconds

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "posted": self.posted}


class VerifierAgent:
    """Verifies and referees for the network with one key."""

    def __init__(
        self,
        client: Gateway,
        key: PrivateKey,
        fetch_dataset: FetchDataset,
        *,
        chain_id: int,
        device: Device = "cpu",
        poll_seconds: float = 1.0,
        bounds: ToleranceBounds = DEFAULT_BOUNDS,
        transient_errors: tuple[type[Exception], ...] = (OSError,),
        check_beacon: bool = True,
        operator: str | None = None,
        report: Callable[[TaskReport], None] | None = None,
    ) -> None:
        """`transient_errors` are what the client and `fetch_dataset` raise on operating
        errors; `operator` is the address whose signed tree heads prove beacons (default:
        the one the gateway's /health names, on first use)."""
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds: expected a positive number, got {poll_seconds}")
        self.client = client
        self.key = key
        self.address = key.address
        self.fetch_dataset = fetch_dataset
        self.chain_id = chain_id
        self.device: Device = device
        self.poll_seconds = poll_seconds
        self.bounds = bounds
        self.transient_errors = transient_errors
        self.check_beacon = check_beacon
        self.operator = operator
        self.report = report
        self.summary = Summary()
        self._witness: LogWitness | None = None
        self._specs: OrderedDict[str, JobSpec] = OrderedDict()
        self._datasets: OrderedDict[str, Examples] = OrderedDict()
        self._noted_unopened: OrderedDict[str, None] = OrderedDict()

    # -- signed commands ------------------------------------------------------------------

    def command(self, path: str, kind: str, **fields: Any) -> dict[str, Any]:
        """Sign `fields` as a `kind` command and POST it to `path`; the result."""
        fields.setdefault("clientId", f"verifier-{secrets.token_hex(8)}")
        fields["nonce"] = secrets.randbits(63)
        fields["expiry"] = int(time.time()) + command_seconds
        signed = sign_command(self.key, kind, self.chain_id, fields)
        result: dict[str, Any] = self.client.post_json(path, signed.to_json())
        return result

    def register(self, stake: int) -> dict[str, Any]:
        """RegisterVerifier: stake `stake` BLACK base units and join the roster."""
        return self.command("/verifiers", "RegisterVerifier", stake=stake)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event, max_tasks: int | None = None) -> Summary:
        """Do passes until `stop` is set or `max_tasks` verdicts and rulings are posted;
        an operating error is logged and the pass tried again after `poll_seconds`."""
        posted = 0
        while not stop.is_set() and (max_tasks is None or posted < max_tasks):
            try:
                done = self._pass(None if max_tasks is None else max_tasks - posted, stop)
            except self.transient_errors as error:
                log.warning("gateway unavailable, retrying in %.1f s: %s", self.poll_seconds, error)
                self.summary.errors += 1
                done = 0
            except InconsistentGateway as error:
                log.error(
                    "cannot read the task list, retrying in %.1f s: %s", self.poll_seconds, error
                )
                self.summary.errors += 1
                done = 0
            posted += done
            if done == 0:
                stop.wait(self.poll_seconds)
        return self.summary

    def run_once(self) -> int:
        """Handle every task GET /tasks lists now; the number of verdicts and rulings posted."""
        return self._pass(None, None)

    def _pass(self, limit: int | None, stop: threading.Event | None) -> int:
        tasks = self.client.get_json("/tasks", {"verifier": self.address})
        try:
            work: list[tuple[Callable[[str], TaskReport | None], str]] = [
                *((self._rule, str(item["id"])) for item in tasks["rulings"]),
                *((self._verdict, str(item["id"])) for item in tasks["verdicts"]),
            ]
        except (KeyError, TypeError) as error:
            raise InconsistentGateway(f"tasks: not the documented shape: {error}") from None
        posted = 0
        for handle, task in work[:tasks_per_pass_max]:
            if (limit is not None and posted >= limit) or (stop is not None and stop.is_set()):
                break
            try:
                report = handle(task)
            except self.transient_errors as error:
                log.warning("task %s put off: %s", task, error)
                self.summary.errors += 1
                continue
            except VerifierError as error:
                # Not the provider's fault, so nothing is posted; the gateway's operator
                # should hear of it, and the next pass tries again.
                log.error("task %s put off, cannot judge it: %s", task, error)
                self.summary.errors += 1
                continue
            if report is not None:
                posted += 1
                self.summary.add(report)
                log.info("%s", report.line())
                if self.report is not None:
                    self.report(report)
        return posted

    # -- verdicts ---------------------------------------------------------------------------

    def _verdict(self, commitment: str) -> TaskReport | None:
        started = time.perf_counter()
        facts = CommitmentFacts.from_json(self.client.get_json(f"/commitments/{commitment}"))
        if facts.id != commitment:
            raise InconsistentGateway(f"asked for commitment {commitment}, got {facts.id}")
        if facts.status != "pending" or facts.verifier != self.address:
            return None  # judged or reassigned since the task list was read
        if facts.openings is None:
            self._note_unopened(facts)
            return None
        spec = self._spec(facts.job)
        try:
            sample = sample_indices(
                facts.root, facts.beacon, self.address, facts.steps, facts.samples
            )
        except ProtocolError as error:
            raise InconsistentGateway(f"commitment {commitment}: {error}") from None
        if tuple(sample) != facts.sample_indices:
            raise InconsistentGateway(
                f"commitment {commitment}: the gateway samples {list(facts.sample_indices)}, "
                f"the root, beacon and this address give {sample}"
            )
        if self.check_beacon:
            self._log_witness().check(facts.id, facts.root, facts.beacon)
        if sample:
            finding = judge(
                spec,
                self._dataset(spec),
                facts,
                self.client,
                sample=sample,
                steps=sample,
                device=self.device,
                bounds=self.bounds,
            )
        else:
            # A job that asks for no detection samples nothing, and a rejection must name
            # a sampled transition: there is nothing to check and nothing to reject.
            finding = Finding(True, None, "no transitions were sampled", ())
        self.command(
            f"/commitments/{commitment}/verdict",
            "PostVerdict",
            clientId=f"verdict-{commitment}",
            commitment=commitment,
            accepted=finding.accepted,
            samples=sample,
            failedStep=finding.failed_step or 0,
            reason=finding.reason,
        )
        return TaskReport(
            "verdict",
            commitment,
            commitment,
            facts.job,
            finding.checked,
            "accepted" if finding.accepted else "rejected",
            finding.failed_step,
            finding.reason,
            time.perf_counter() - started,
        )

    def _note_unopened(self, facts: CommitmentFacts) -> None:
        """Say once per commitment why it waits (a pass comes by every `poll_seconds`)."""
        if facts.id in self._noted_unopened:
            return
        self._noted_unopened[facts.id] = None
        if len(self._noted_unopened) > tasks_per_pass_max:
            self._noted_unopened.popitem(last=False)
        if time.time() > facts.opening_deadline:
            log.info("commitment %s: unopened past its deadline, left to the sweep", facts.id)
        else:
            log.info("commitment %s: waiting for the provider's openings", facts.id)

    # -- rulings ----------------------------------------------------------------------------

    def _rule(self, dispute_id: str) -> TaskReport | None:
        started = time.perf_counter()
        dispute = self.client.get_json(f"/disputes/{dispute_id}")
        try:
            status, referee = dispute["status"], dispute["referee"]
            step, commitment = int(dispute["step"]), str(dispute["commitment"])
        except (KeyError, TypeError, ValueError) as error:
            raise InconsistentGateway(f"dispute: not the documented shape: {error}") from None
        if status != "open" or referee != self.address:
            return None  # ruled or reassigned since the task list was read
        facts = CommitmentFacts.from_json(self.client.get_json(f"/commitments/{commitment}"))
        samples = facts.verdict_samples
        if facts.id != commitment or samples is None or step not in samples:
            raise InconsistentGateway(
                f"dispute {dispute_id}: step {step} is not a sampled step of the verdict on "
                f"commitment {facts.id}"
            )
        spec = self._spec(facts.job)
        if facts.openings is None:
            finding = Finding(False, step, f"step {step}: no openings were published", ())
        else:
            finding = judge(
                spec,
                self._dataset(spec),
                facts,
                self.client,
                sample=samples,
                steps=[step],
                device=self.device,
                bounds=self.bounds,
            )
        fraud = not finding.accepted
        reason = finding.reason if fraud else f"step {step} re-executed: it matches the commitment"
        self.command(
            f"/disputes/{dispute_id}/ruling",
            "RuleDispute",
            clientId=f"ruling-{dispute_id}",
            dispute=dispute_id,
            fraud=fraud,
            reason=clip(reason),
        )
        return TaskReport(
            "ruling",
            dispute_id,
            facts.id,
            facts.job,
            finding.checked,
            "fraud" if fraud else "cleared",
            step if fraud else None,
            reason,
            time.perf_counter() - started,
        )

    # -- what the tasks need ---------------------------------------------------------------

    def _spec(self, job: str) -> JobSpec:
        spec = self._specs.get(job)
        if spec is not None:
            return spec
        document = self.client.get_json(f"/jobs/{job}")
        try:
            spec = parse_job_spec(document["spec"])
            signed = document["spec_hash"]
        except (KeyError, TypeError, ValueError) as error:
            raise InconsistentGateway(f"job {job}: its spec does not parse: {error}") from None
        if "0x" + spec.digest().hex() != signed:
            raise InconsistentGateway(f"job {job}: its spec does not hash to the signed digest")
        self._specs[job] = spec
        if len(self._specs) > specs_cached_max:
            self._specs.popitem(last=False)
        return spec

    def _dataset(self, spec: JobSpec) -> Examples:
        dataset_id = "0x" + spec.dataset.sha256.hex()
        data = self._datasets.get(dataset_id)
        if data is None:
            data = self.fetch_dataset(dataset_id)
            self._datasets[dataset_id] = data
            if len(self._datasets) > datasets_cached_max:
                self._datasets.popitem(last=False)
        self._datasets.move_to_end(dataset_id)
        return data

    def _log_witness(self) -> LogWitness:
        if self._witness is None:
            operator = self.operator
            if operator is None:
                operator = str(self.client.get_json("/health")["operator"])
            self._witness = LogWitness(self.client, operator=operator, chain_id=self.chain_id)
        return self._witness

"""Group commit across requests: one writer thread per gateway process.

Request threads verify their command's signature themselves, then hand it to the
committer and wait. The committer takes whatever has queued up (at most
`batch_commands_max`) and applies it in one transaction with `Network`'s batch path, so
a burst of requests costs one commit instead of one each, and commands of one process
never race each other for an account. Each request still gets its own result or error,
and its 201 only after the transaction holding it is durable.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from protocol.application import CommandContext, CommandResult, Network
from protocol.commands import SignedCommand, VerifiedCommand, verify_command
from protocol.errors import ProtocolError

batch_commands_max = 256
queue_commands_max = 4096
wait_seconds_max = 120.0


class CommitterStopped(ProtocolError, RuntimeError):
    """The gateway is shutting down and takes no more commands."""


@dataclass(slots=True)
class _Pending:
    command: VerifiedCommand
    context: CommandContext | None
    result: Future[CommandResult]


class GroupCommitter:
    """Applies commands handed to it by many threads in as few transactions as it can."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._queue: queue.Queue[_Pending | None] = queue.Queue(queue_commands_max)
        self._thread = threading.Thread(target=self._run, name="group-committer", daemon=True)
        self._stopped = False
        self._thread.start()

    def submit(
        self, command: SignedCommand, context: CommandContext | None = None
    ) -> CommandResult:
        """Verify `command` here, apply it in the next group, and return its result."""
        if self._stopped:
            raise CommitterStopped("the gateway is shutting down")
        verified = verify_command(command, self.network.chain_id)
        pending = _Pending(verified, context, Future())
        self._queue.put(pending, timeout=wait_seconds_max)
        return pending.result.result(timeout=wait_seconds_max)

    def submit_many(self, commands: Sequence[SignedCommand]) -> list[CommandResult | ProtocolError]:
        """Verify each command here, apply them all (in order, in the coming groups), and
        return each one's result or error in its slot."""
        if self._stopped:
            raise CommitterStopped("the gateway is shutting down")
        slots: list[CommandResult | ProtocolError | _Pending] = []
        for command in commands:
            try:
                verified = verify_command(command, self.network.chain_id)
            except ProtocolError as error:
                slots.append(error)
                continue
            pending = _Pending(verified, None, Future())
            self._queue.put(pending, timeout=wait_seconds_max)
            slots.append(pending)
        results: list[CommandResult | ProtocolError] = []
        for slot in slots:
            if not isinstance(slot, _Pending):
                results.append(slot)
                continue
            try:
                results.append(slot.result.result(timeout=wait_seconds_max))
            except ProtocolError as error:
                results.append(error)
        return results

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < batch_commands_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._apply(group)
                    return
                group.append(item)
            self._apply(group)

    def _apply(self, group: list[_Pending]) -> None:
        try:
            results = self.network.submit_verified_many(
                [p.command for p in group], int(time.time()), [p.context for p in group]
            )
        except BaseException as error:  # A store failure fails this group, not the thread.
            for pending in group:
                pending.result.set_exception(error)
            return
        for pending, result in zip(group, results, strict=True):
            if isinstance(result, ProtocolError):
                pending.result.set_exception(result)
            else:
                pending.result.set_result(result)

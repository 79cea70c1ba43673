"""Counters for GET /metrics, in the Prometheus text exposition format 0.0.4.

The counters live in the process that served the request. Under gunicorn every worker
keeps its own, and a scrape reaches whichever worker accepts it; so each per-process
series carries a `worker` label (the pid), which keeps every series monotonic and lets
a query sum them (`sum without (worker) (rate(...))`). A series can go unseen while its
worker is not the one scraped; run one worker where every scrape must see everything.
The log size is read from the store, so it is the same whichever worker answers.

Label values are bounded: endpoints are route templates (or "unmatched"), methods and
kinds outside the known sets are counted as "other", outcomes are problem slugs.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import Counter

from protocol.commands import KINDS

LATENCY_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One process's request, command and latency counters."""

    def __init__(self) -> None:
        self.worker = str(os.getpid())
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str]] = Counter()
        self._commands: Counter[tuple[str, str]] = Counter()
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"
        slot = bisect.bisect_left(LATENCY_BUCKETS_SECONDS, seconds)
        with self._lock:
            self._requests[(endpoint, method, str(status))] += 1
            buckets = self._buckets.setdefault(endpoint, [0] * (len(LATENCY_BUCKETS_SECONDS) + 1))
            buckets[slot] += 1
            self._sums[endpoint] = self._sums.get(endpoint, 0.0) + seconds

    def count_command(self, kind: str, outcome: str) -> None:
        """Count one command: `outcome` is accepted, duplicate, or the problem's slug."""
        kind = kind if kind in KINDS else "other"
        with self._lock:
            self._commands[(kind, outcome)] += 1

    def render(self, log_size: int) -> str:
        """The exposition text of every counter, and the log size."""
        with self._lock:
            requests = sorted(self._requests.items())
            commands = sorted(self._commands.items())
            buckets = {k: list(v) for k, v in sorted(self._buckets.items())}
            sums = dict(self._sums)
        worker = ("worker", self.worker)
        lines = [
            "# HELP blacktail_http_requests_total HTTP requests answered by this worker.",
            "# TYPE blacktail_http_requests_total counter",
        ]
        for (endpoint, method, status), count in requests:
            labels = _labels(("endpoint", endpoint), ("method", method), ("status", status), worker)
            lines.append(f"blacktail_http_requests_total{labels} {count}")
        lines += [
            "# HELP blacktail_commands_total Signed commands by kind and outcome.",
            "# TYPE blacktail_commands_total counter",
        ]
        for (kind, outcome), count in commands:
            labels = _labels(("kind", kind), ("outcome", outcome), worker)
            lines.append(f"blacktail_commands_total{labels} {count}")
        lines += [
            "# HELP blacktail_http_request_duration_seconds Time to answer a request.",
            "# TYPE blacktail_http_request_duration_seconds histogram",
        ]
        name = "blacktail_http_request_duration_seconds"
        for endpoint, counts in buckets.items():
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS_SECONDS, None), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound is None else repr(bound)
                labels = _labels(("endpoint", endpoint), worker, ("le", le))
                lines.append(f"{name}_bucket{labels} {cumulative}")
            labels = _labels(("endpoint", endpoint), worker)
            lines.append(f"{name}_sum{labels} {sums[endpoint]!r}")
            lines.append(f"{name}_count{labels} {cumulative}")
        lines += [
            "# HELP blacktail_log_size Events in the tamper-evident log.",
            "# TYPE blacktail_log_size gauge",
            f"blacktail_log_size {log_size}",
        ]
        return "\n".join(lines) + "\n"


def _labels(*pairs: tuple[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

"""Prometheus metrics (prometheus-client), one registry per gateway.

The request path only increments what it must (a request counter and the upstream latency);
everything that is already counted elsewhere (queue depth, throttled logins, commits) is read
at scrape time by a collector, so it costs nothing per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route, HTTP status and audit outcome.",
            ["route", "status", "outcome"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_seconds",
            "Time from forwarding a call to the upstream's whole answer (or failure).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.audit_commit_seconds = Histogram(
            "gateway_audit_commit_seconds",
            "Time to append and commit one batch of audit records.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.audit_batch_records = Histogram(
            "gateway_audit_batch_records",
            "Audit records per commit (group commit shares one among concurrent calls).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.audit_write_failures = Counter(
            "gateway_audit_write_failures",
            "Audit batches that could not be committed (the callers got 503).",
            registry=self.registry,
        )
        self.intents_in_flight = Gauge(
            "gateway_intents_in_flight",
            "Calls whose intent is committed and whose outcome is not yet.",
            registry=self.registry,
        )
        self.pending_intents_at_start = Gauge(
            "gateway_pending_intents_at_start",
            "Intents without an outcome found at start-up (a previous run stopped mid-call; see audit reconcile).",
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, int, str | None], Callable[[], None]] = {}

    def count_request(self, route: str, status: int, outcome: str | None) -> None:
        key = (route, status, outcome)
        increment = self._request_children.get(key)
        if increment is None:  # labels() takes a lock and builds strings: do it once per combination
            increment = self._request_children[key] = self.requests.labels(route, str(status), outcome or "none").inc
        increment()

    def observe_commit(self, records: int, seconds: float, ok: bool) -> None:
        """Called by the audit writer's thread after each batch (prometheus-client is thread-safe)."""
        if ok:
            self.audit_commit_seconds.observe(seconds)
            self.audit_batch_records.observe(records)
        else:
            self.audit_write_failures.inc()

    def read_at_scrape(self, name: str, help: str, read: Callable[[], float], *, counter: bool = False) -> None:
        self.registry.register(_ReadAtScrape(name, help, read, counter))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ReadAtScrape(Collector):
    def __init__(self, name: str, help: str, read: Callable[[], float], counter: bool) -> None:
        self._name, self._help, self._read, self._counter = name, help, read, counter

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily if self._counter else GaugeMetricFamily
        yield family(self._name, self._help, value=self._read())

"""The metrics kept as plain numbers render exactly what prometheus-client's own metric objects
rendered before them: the same names, labels, types, help, values and ``_created`` series."""

from __future__ import annotations

import re
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics

# The facts of a fixed set of requests: (route, status, outcome, upstream seconds or None when
# nothing was forwarded). Latencies fall on bucket bounds, between them and past the last one.
REQUESTS: list[tuple[str, int, str | None, float | None]] = [
    ("token", 200, "deleted", 0.0031),
    ("token", 404, "not_found", 0.001),
    ("token", 401, "denied", None),
    ("token", 401, "denied", None),
    ("token", 429, None, None),
    ("other", 404, None, 0.0),
    ("token", 200, "deleted", 42.0),
    ("other", 200, None, 30.0),
]
# (records, seconds, committed) per audit batch.
COMMITS: list[tuple[int, float, bool]] = [(2, 0.0004, True), (1, 0.0025, True), (3, 0.2, False), (1024, 0.01, True)]


class _Before:
    """The metric objects the gateway kept before its counters were plain: the reference."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route, HTTP status and audit outcome.",
            ["route", "status", "outcome"],
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_seconds",
            "Time from forwarding a call to the upstream's whole answer (or failure).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.audit_commit_seconds = Histogram(
            "gateway_audit_commit_seconds",
            "Time to append and commit one batch of audit records.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.audit_batch_records = Histogram(
            "gateway_audit_batch_records",
            "Audit records per commit (group commit shares one among concurrent calls).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.audit_write_failures = Counter(
            "gateway_audit_write_failures",
            "Audit batches that could not be committed (the callers got 503).",
            registry=registry,
        )
        self.intents_in_flight = Gauge(
            "gateway_intents_in_flight",
            "Calls whose intent is committed and whose outcome is not yet.",
            registry=registry,
        )
        self.pending_intents_at_start = Gauge(
            "gateway_pending_intents_at_start",
            "Intents without an outcome found at start-up (a previous run stopped mid-call; see audit reconcile).",
            registry=registry,
        )


def _without_creation_times(exposition: bytes) -> str:
    """The exposition with each ``_created`` sample's value (a clock reading) replaced."""
    return re.sub(r"^(\S+_created(?:\{[^}]*\})?) \S+$", r"\1 T", exposition.decode(), flags=re.MULTILINE)


def _replay(metrics: Metrics | _Before) -> None:
    for route, status, outcome, seconds in REQUESTS:
        if isinstance(metrics, Metrics):
            metrics.count_request(route, status, outcome)
        else:
            metrics.requests.labels(route, str(status), outcome or "none").inc()
        if seconds is not None:
            metrics.upstream_seconds.observe(seconds)
    for records, seconds, committed in COMMITS:
        if isinstance(metrics, Metrics):
            metrics.observe_commit(records, seconds, committed)
        elif committed:
            metrics.audit_commit_seconds.observe(seconds)
            metrics.audit_batch_records.observe(records)
        else:
            metrics.audit_write_failures.inc()
    metrics.intents_in_flight.inc()
    metrics.intents_in_flight.inc()
    metrics.intents_in_flight.dec()
    metrics.pending_intents_at_start.set(3)


def test_a_fixed_set_of_requests_renders_as_before() -> None:
    before, after = _Before(), Metrics()
    assert _without_creation_times(generate_latest(before.registry)) == _without_creation_times(after.render())
    _replay(before)
    _replay(after)
    expected = _without_creation_times(generate_latest(before.registry))
    assert 'gateway_requests_total{outcome="denied",route="token",status="401"} 2.0' in expected  # replayed
    assert 'gateway_upstream_seconds_bucket{le="+Inf"} 5.0' in expected
    assert expected == _without_creation_times(after.render())


def test_creation_times_are_those_of_the_first_count() -> None:
    """A labelled counter's ``_created`` is when its label set was first counted, as before."""
    metrics = Metrics()
    metrics.count_request("token", 200, "deleted")
    first = metrics.requests[("token", 200, "deleted")][1]
    metrics.count_request("token", 200, "deleted")
    created = re.search(
        r'^gateway_requests_created\{outcome="deleted",route="token",status="200"\} (\S+)$',
        metrics.render().decode(),
        re.MULTILINE,
    )
    assert created is not None
    assert first == float(created.group(1))


def test_a_scrape_while_the_writer_thread_observes_sees_whole_numbers() -> None:
    """The audit writer observes its batches from its own thread while scrapes render."""
    metrics = Metrics()

    def commit() -> None:
        for _ in range(20_000):
            metrics.observe_commit(1, 0.001, True)

    writer = threading.Thread(target=commit)
    writer.start()
    while writer.is_alive():
        assert b"gateway_audit_batch_records_count" in metrics.render()
    writer.join()
    assert b"gateway_audit_batch_records_count 20000.0\n" in metrics.render()

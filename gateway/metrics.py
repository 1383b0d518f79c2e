"""Prometheus metrics, one registry per gateway, kept as plain numbers on the request path.

The request path only adds to plain Python ints, floats and one dict (a request counter, the
upstream latency, the intents in flight): prometheus-client's metric objects take a lock and
build label tuples on every increment, which cost 25-35 us of loop CPU per request
(``docs/performance.md``). A custom collector turns the plain numbers into the same families
(names, labels, types, help, ``_created`` series) only when Prometheus scrapes. Everything that
is already counted elsewhere (queue depth, throttled logins, commits) is read at scrape time
the same way, so it costs nothing per request.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

RequestKey = tuple[str, int, str | None]
"""A request counter's labels: route, HTTP status, audit outcome (None: no record)."""


class PlainCounter:
    """A counter without labels: one float, added to by one thread."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class PlainGauge:
    """A gauge without labels: one number, changed by the event loop's thread only."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1

    def set(self, value: float) -> None:
        self.value = value


class PlainHistogram:
    """A histogram without labels, kept as prometheus-client keeps one: a count per bucket
    (not yet cumulative), the sum, and one thread that observes. A scrape running while it
    observes may see the count one ahead of the sum, never a torn number."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = (*(float(bound) for bound in bounds), math.inf)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (``le``).
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests: dict[RequestKey, list[float]] = {}
        """Answers by labels: [count, created]; ``count_request`` is the one writer."""
        self.upstream_seconds = PlainHistogram(LATENCY_BUCKETS)
        self.audit_commit_seconds = PlainHistogram(LATENCY_BUCKETS)
        self.audit_batch_records = PlainHistogram(BATCH_BUCKETS)
        self.audit_write_failures = PlainCounter()
        self.intents_in_flight = PlainGauge()
        self.pending_intents_at_start = PlainGauge()
        self.registry.register(_Families(self))

    def count_request(self, route: str, status: int, outcome: str | None) -> None:
        counted = self.requests.get((route, status, outcome))
        if counted is None:
            self.requests[(route, status, outcome)] = [1.0, time.time()]
        else:
            counted[0] += 1

    def observe_commit(self, records: int, seconds: float, ok: bool) -> None:
        """Called by the audit writer's thread after each batch (the only thread that writes these)."""
        if ok:
            self.audit_commit_seconds.observe(seconds)
            self.audit_batch_records.observe(records)
        else:
            self.audit_write_failures.inc()

    def read_at_scrape(self, name: str, help: str, read: Callable[[], float], *, counter: bool = False) -> None:
        self.registry.register(_ReadAtScrape(name, help, read, counter))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Families(Collector):
    """The plain numbers of ``Metrics`` as prometheus-client's own metric objects would show them."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        requests = CounterMetricFamily(
            "gateway_requests",
            "Requests answered, by route, HTTP status and audit outcome.",
            labels=("route", "status", "outcome"),
        )
        for (route, status, outcome), (count, created) in list(metrics.requests.items()):
            requests.add_metric((route, str(status), outcome or "none"), count, created=created)
        yield requests
        yield _histogram(
            "gateway_upstream_seconds",
            "Time from forwarding a call to the upstream's whole answer (or failure).",
            metrics.upstream_seconds,
        )
        yield _histogram(
            "gateway_audit_commit_seconds",
            "Time to append and commit one batch of audit records.",
            metrics.audit_commit_seconds,
        )
        yield _histogram(
            "gateway_audit_batch_records",
            "Audit records per commit (group commit shares one among concurrent calls).",
            metrics.audit_batch_records,
        )
        failures = metrics.audit_write_failures
        yield CounterMetricFamily(
            "gateway_audit_write_failures",
            "Audit batches that could not be committed (the callers got 503).",
            value=failures.value,
            created=failures.created,
        )
        yield GaugeMetricFamily(
            "gateway_intents_in_flight",
            "Calls whose intent is committed and whose outcome is not yet.",
            value=metrics.intents_in_flight.value,
        )
        yield GaugeMetricFamily(
            "gateway_pending_intents_at_start",
            "Intents without an outcome found at start-up (a previous run stopped mid-call; see audit reconcile).",
            value=metrics.pending_intents_at_start.value,
        )


def _histogram(name: str, help: str, histogram: PlainHistogram) -> Metric:
    cumulative, buckets = 0, []
    for bound, count in zip(histogram.bounds, list(histogram.counts), strict=True):
        cumulative += count
        buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]  # the bounds as prometheus-client writes them
    family = HistogramMetricFamily(name, help, buckets=buckets, sum_value=histogram.sum)
    family.add_sample(f"{name}_created", {}, histogram.created)
    return family


class _ReadAtScrape(Collector):
    def __init__(self, name: str, help: str, read: Callable[[], float], counter: bool) -> None:
        self._name, self._help, self._read, self._counter = name, help, read, counter

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily if self._counter else GaugeMetricFamily
        yield family(self._name, self._help, value=self._read())

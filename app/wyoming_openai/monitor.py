"""What the proxy has done: one log line per request, Prometheus metrics, the recent requests and
their latencies for the status page. Never the transcript or the spoken text.

Fed by the failover layer (each client request once it ended, each upstream call) and by the
handler (clients connecting and leaving); read by the HTTP port (http.py).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

_LOGGER = logging.getLogger(__name__)

RECENT_REQUESTS = 50
LATENCY_WINDOW = 3600.0  # seconds of latencies kept for the percentiles
LATENCY_POINTS = 20_000  # at most, whatever the traffic: a bound on memory
# Speech latencies people notice lie between a tenth of a second and a few seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class RequestRecord:
    """One client request, as it ended."""

    direction: str  # "stt" or "tts"
    model: str
    voice: str | None  # TTS only
    upstream: str  # "primary", "fallback", or "primary+fallback" when a stream used both
    outcome: str  # "ok", a failure kind (failover.failure_kind), "cancelled" or "error"
    latency: float | None  # STT: end of speech to transcript; TTS: request to first audio
    total: float  # seconds from the request to its end
    amount: float  # STT: seconds of audio; TTS: characters
    time: float  # wall clock at the request's start
    fell_back_after: str | None = None  # the primary's failure that sent it to the fallback

    def __str__(self) -> str:  # formatted only when the log line is written
        return self.log_line()

    def log_line(self) -> str:
        what = self.model if self.voice is None else f"{self.model}/{self.voice}"
        route = self.upstream + (f" (primary: {self.fell_back_after})" if self.fell_back_after else "")
        if self.direction == "stt":
            timing = f"transcript after {self.total:.2f} s" if self.outcome == "ok" else f"after {self.total:.2f} s"
            size = f"{self.amount:.1f} s of audio"
        else:
            first = f"first audio {self.latency:.2f} s, " if self.latency is not None else ""
            timing = f"{first}{self.total:.2f} s in all"
            size = f"{int(self.amount)} characters"
        return f"{self.direction.upper()} {what} via {route}: {self.outcome}, {timing}, {size}"


class Monitor:
    """Per proxy: its own metrics registry (tests run several proxies in one process)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.recent: deque[RequestRecord] = deque(maxlen=RECENT_REQUESTS)
        self.latencies: deque[tuple[float, str, float]] = deque(maxlen=LATENCY_POINTS)  # (time, direction, s)
        self._clients: set[int] = set()
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        self.requests = Counter(
            "wyoming_openai_requests", "Client requests by how they ended", ["direction", "upstream", "outcome"],
            registry=registry,
        )  # fmt: skip
        self.upstream_requests = Counter(
            "wyoming_openai_upstream_requests", "Requests sent to each upstream", ["direction", "upstream"],
            registry=registry,
        )  # fmt: skip
        self.upstream_failures = Counter(
            "wyoming_openai_upstream_failures", "Failed upstream requests by kind", ["direction", "upstream", "kind"],
            registry=registry,
        )  # fmt: skip
        self.fallbacks = Counter(
            "wyoming_openai_fallbacks", "Client requests sent to the fallback, by the primary's failure (or skipped)",
            ["direction", "reason"], registry=registry,
        )  # fmt: skip
        self.transcript_latency = Histogram(
            "wyoming_openai_transcript_seconds", "End of speech to transcript", ["upstream"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.first_audio_latency = Histogram(
            "wyoming_openai_first_audio_seconds", "Speech request to its first audio", ["upstream"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.request_duration = Histogram(
            "wyoming_openai_request_seconds", "Client request to its end", ["direction", "upstream"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.audio_seconds = Counter(
            "wyoming_openai_transcribed_audio_seconds", "Seconds of audio transcribed", ["upstream", "model"],
            registry=registry,
        )  # fmt: skip
        self.characters = Counter(
            "wyoming_openai_synthesized_characters", "Characters synthesized", ["upstream", "model"],
            registry=registry,
        )  # fmt: skip
        clients = Gauge("wyoming_openai_clients_connected", "Wyoming clients connected", registry=registry)
        clients.set_function(lambda: len(self._clients))  # counted when scraped
        self._children: dict[tuple, Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the library's lookup was most of this module's cost
        per request (a lock and label checks on every call)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- the Wyoming side (the handler) ------------------------------------------------------

    def client_connected(self, client: object) -> None:
        self._clients.add(id(client))

    def client_disconnected(self, client: object) -> None:
        """May be called more than once for one client."""
        self._clients.discard(id(client))

    @property
    def clients_connected(self) -> int:
        return len(self._clients)

    # --- upstream calls and client requests (the failover layer) -----------------------------

    def upstream_answered(self, direction: str, upstream: str, model: str, amount: float) -> None:
        """An upstream answered: ``amount`` is what it bills, seconds of audio or characters."""
        self._child(self.upstream_requests, direction, upstream).inc()
        billed = self.audio_seconds if direction == "stt" else self.characters
        self._child(billed, upstream, model).inc(amount)

    def upstream_failed(self, direction: str, upstream: str, kind: str) -> None:
        self._child(self.upstream_requests, direction, upstream).inc()
        self._child(self.upstream_failures, direction, upstream, kind).inc()

    def fallback_taken(self, direction: str, reason: str) -> None:
        self.fallbacks.labels(direction, reason).inc()

    def request(self, record: RequestRecord) -> None:
        _LOGGER.info("%s", record)
        self.recent.append(record)
        self._child(self.requests, record.direction, record.upstream, record.outcome).inc()
        self._child(self.request_duration, record.direction, record.upstream).observe(record.total)
        if record.latency is not None and record.outcome == "ok":
            latency = self.transcript_latency if record.direction == "stt" else self.first_audio_latency
            self._child(latency, record.upstream).observe(record.latency)
            self.latencies.append((record.time, record.direction, record.latency))

    # --- reading (the HTTP port) -------------------------------------------------------------

    def recent_requests(self) -> list[dict]:
        return [asdict(record) for record in reversed(self.recent)]

    def latency_window(self, now: float | None = None) -> Iterator[tuple[float, str, float]]:
        """(time, direction, seconds) of the successful requests of the last hour, oldest first."""
        since = (time.time() if now is None else now) - LATENCY_WINDOW
        while self.latencies and self.latencies[0][0] < since:
            self.latencies.popleft()
        return iter(self.latencies)


def percentiles(values: Iterable[float], points: Iterable[int] = (50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return {f"p{p}": None for p in points}
    return {f"p{p}": ordered[min(len(ordered) - 1, max(0, -(-p * len(ordered) // 100) - 1))] for p in points}


def gauge(name: str, documentation: str, labels: list[str], samples: Iterable[tuple[list[str], float]]):
    """A gauge family computed when scraped (for custom collectors)."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family

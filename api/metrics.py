"""Prometheus metrics: requests, time to first token, decode speed, cache hits, KV bytes, queue."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class _Live:
    """Values read at scrape time: KV bytes per tier, admitted requests, the cache hit ratio."""

    def __init__(self, kv_stats: Callable[[], dict[str, int]], depth: Callable[[], int],
                 stopped: Callable[[], int], tokens: Callable[[], tuple[float, float]]) -> None:
        self.kv_stats, self.depth, self.stopped, self.tokens = kv_stats, depth, stopped, tokens

    def collect(self):  # noqa: ANN201 - the prometheus_client collector protocol
        kv = GaugeMetricFamily("strata_kv_bytes", "Resident KV cache bytes by tier", labels=["tier"])
        for tier, value in sorted(self.kv_stats().items()):
            kv.add_metric([tier], float(value))
        yield kv
        yield GaugeMetricFamily("strata_queue_depth", "Requests admitted (running or waiting)",
                                value=float(self.depth()))
        yield CounterMetricFamily("strata_requests_stopped", "Generations stopped because the client left",
                                  value=float(self.stopped()))
        prompt, cached = self.tokens()
        yield GaugeMetricFamily("strata_cache_hit_ratio", "Cached prompt tokens / prompt tokens",
                                value=cached / prompt if prompt else 0.0)


class Metrics:
    """One registry per app, so several apps (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("strata_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.ttft = Histogram("strata_ttft_seconds", "Time to first token", buckets=TTFT_BUCKETS, registry=r)
        self.decode_rate = Histogram("strata_decode_tokens_per_second", "Decode speed per request",
                                     buckets=RATE_BUCKETS, registry=r)
        self.prompt_tokens = Counter("strata_prompt_tokens", "Prompt tokens", registry=r)
        self.cached_tokens = Counter("strata_cached_tokens", "Prompt tokens served from the cache",
                                     registry=r)
        self.completion_tokens = Counter("strata_completion_tokens", "Generated tokens", registry=r)
        self.rejected = Counter("strata_rejected", "Requests refused because the queue was full",
                                registry=r)
        self._prompt_total = self._cached_total = 0.0

    def watch(self, kv_stats: Callable[[], dict[str, int]], depth: Callable[[], int],
              stopped: Callable[[], int]) -> None:
        """Register the scrape-time values (once the engine exists)."""
        self.registry.register(_Live(kv_stats, depth, stopped, self._tokens))

    def _tokens(self) -> tuple[float, float]:
        return self._prompt_total, self._cached_total

    def generation(self, prompt: int, cached: int, completion: int, ttft_s: float, rate: float) -> None:
        """Record one finished generation."""
        self.prompt_tokens.inc(prompt)
        self._prompt_total += prompt
        self._cached_total += cached
        self.cached_tokens.inc(cached)
        self.completion_tokens.inc(completion)
        self.ttft.observe(ttft_s)
        if rate > 0:
            self.decode_rate.observe(rate)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Every input and service limit with its default, defined once, and the counters that enforce them.

Nothing here imports OpenCV, Pillow, FastAPI or uvicorn: the command line reads its ``serve`` option
defaults from :class:`ServiceSettings` without loading any of them, and :mod:`ferkit.core.images`,
:mod:`~ferkit.apps.service.upload`, :mod:`~ferkit.apps.service.app` and :mod:`~ferkit.apps.service.netguard`
take their numbers from here.
See ``docs/service.md`` ("Limits") for what each limit protects against.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Any

from ferkit.core.settings import MAX_PIXELS
from ferkit.errors import ConfigError


def default_workers() -> int:
    """Inference threads by default: one per CPU core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class ServiceSettings:
    """Limits and options of the HTTP service (all have safe defaults; ``docs/service.md`` lists them).

    Attributes:
        workers: inference threads (requests analysed at the same time); 0 = :func:`default_workers`.
        max_queue: requests whose body has arrived that may wait for a free worker; beyond
            ``workers + max_queue`` of them the service answers 503 with a ``Retry-After`` computed
            from the queue.
        timeout_s: time from the end of the body to the answer, queueing included (504). A request
            whose predicted wait (queue × measured mean service time ÷ workers) is already longer is
            answered 503 at once instead of 504 later.
        body_timeout_s: time from the end of the request head to the last byte of the body (408,
            connection closed). A request holds no inference slot while its body arrives.
        header_timeout_s: time from a connection's first byte (or its opening) to the end of a request
            head; slower clients are answered 408 and disconnected.
        keep_alive_s: an idle keep-alive connection is closed after this (uvicorn ``timeout_keep_alive``).
        max_header_bytes: largest request head (request line + headers); larger ones get 400 and are
            disconnected (h11's incomplete-event limit).
        max_connections: open connections in all; new ones beyond it get 503 and are closed.
        max_connections_per_client: open connections from one client address; new ones beyond it get
            429 and are closed (0 = no cap). Behind a reverse proxy every client has the proxy's
            address: raise it or set 0 there and cap per client in the proxy.
        max_body_memory_bytes: request bodies held in memory at once, all requests together (being
            received, queued or analysed); a request that would exceed it gets 503.
        max_upload_bytes: largest accepted image file (413); a base64 JSON body may be 4/3 of it.
        max_pixels: largest accepted image in pixels, read from the header before decoding (413).
        api_key: when set, every ``/v1/`` request must send it in the ``X-API-Key`` header (401).
        jpeg_quality: quality of ``/v1/annotate`` JPEGs.
        retry_after_s: the smallest ``Retry-After`` sent (and the one sent before any analysis has been
            timed).
        max_streams: live streams (``/v1/stream/{id}``, the page's camera mode) tracked at once; a new
            one beyond it gets 503 until one has been idle for ``stream_idle_s``.
        stream_idle_s: a live stream without a frame for this long is forgotten.
        allowed_hosts: when set, requests whose ``Host`` header (port removed) is not one of these get
            400 — on a loopback bind this stops DNS-rebinding pages from reading the API
            (:func:`ferkit.apps.service.app.serve` sets it to the loopback names). None = no check.
    """

    workers: int = 0
    max_queue: int = 16
    timeout_s: float = 30.0
    body_timeout_s: float = 20.0
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 256
    max_connections_per_client: int = 32
    max_body_memory_bytes: int = 256 * 2**20
    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = MAX_PIXELS
    api_key: str | None = None
    jpeg_quality: int = 90
    retry_after_s: int = 1
    max_streams: int = 8
    stream_idle_s: float = 30.0
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.workers <= 0:
            self.workers = default_workers()
        for name in ("max_queue", "max_connections_per_client"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("timeout_s", "body_timeout_s", "header_timeout_s", "keep_alive_s", "max_header_bytes",
                     "max_connections", "max_upload_bytes", "max_pixels", "retry_after_s", "max_streams",
                     "stream_idle_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_body_memory_bytes < self.max_json_bytes:
            raise ConfigError(f"max_body_memory_bytes ({self.max_body_memory_bytes}) must hold at least one "
                              f"largest body ({self.max_json_bytes} bytes of base64 JSON)")
        self.api_key = self.api_key or None  # empty string = no key

    @property
    def max_in_flight(self) -> int:
        """Requests admitted to inference at once (running + waiting); the next one gets 503."""
        return self.workers + self.max_queue

    @property
    def max_json_bytes(self) -> int:
        """Largest JSON body: base64 of the largest file plus room for the field names."""
        return self.max_upload_bytes * 4 // 3 + 1024


class Admission:
    """Inference slots, taken once a request's body has fully arrived, and the queue's measured pace.

    Thread-safe: slots are released and service times recorded from worker threads.

    Args:
        limit: slots (``workers + max_queue``).
        workers: requests served at the same time (the divisor of the wait estimate).
        floor_s: smallest ``Retry-After``, and the one used before any service time is measured.
    """

    #: Weight of the newest service time in the running mean (an exponentially weighted average).
    EWMA_WEIGHT = 0.2

    def __init__(self, limit: int, workers: int = 1, floor_s: int = 1):
        self.limit = limit
        self.workers = max(1, workers)
        self.floor_s = max(1, int(floor_s))
        self.active = 0
        self.mean_s: float | None = None
        self._lock = threading.Lock()

    def try_acquire(self, budget_s: float | None = None) -> bool:
        """Take a slot; False when all are taken, or when the request would queue and its predicted
        time to an answer (queue ahead ÷ workers + 1 service times) exceeds ``budget_s``.

        A request that finds a free worker is always admitted: the running ones keep the measured
        mean up to date, so a slow spell can never lock the queue shut.
        """
        with self._lock:
            if self.active >= self.limit:
                return False
            if budget_s is not None and self.mean_s is not None and self.active >= self.workers:
                predicted = (self.active // self.workers + 1) * self.mean_s
                if predicted > budget_s:
                    return False
            self.active += 1
            return True

    def release(self, *_: Any) -> None:
        """Give a slot back (also usable as a Future done-callback)."""
        with self._lock:
            self.active = max(0, self.active - 1)

    def record(self, seconds: float) -> None:
        """Add one measured service time (decode + analysis + encoding of one request)."""
        with self._lock:
            if self.mean_s is None:
                self.mean_s = seconds
            else:
                self.mean_s += self.EWMA_WEIGHT * (seconds - self.mean_s)

    def retry_after(self) -> int:
        """Seconds until the requests admitted now are done: queue length × mean service time ÷ workers.

        At least ``floor_s``, at most an hour; ``floor_s`` while no service time has been measured.
        """
        with self._lock:
            if self.mean_s is None:
                return self.floor_s
            return int(min(3600, max(self.floor_s, math.ceil(self.active * self.mean_s / self.workers))))


class BodyBudget:
    """Bytes of request bodies held in memory, all requests together, under one cap (thread-safe)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) when that would exceed the cap."""
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        """Return ``n`` reserved bytes."""
        with self._lock:
            self.used = max(0, self.used - n)


class BodyTicket:
    """One request's share of a :class:`BodyBudget`; :meth:`close` returns all of it, once."""

    def __init__(self, budget: BodyBudget):
        self.budget = budget
        self.held = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` more bytes for this request; False when the budget is exhausted."""
        if not self.budget.take(n):
            return False
        self.held += n
        return True

    def close(self, *_: Any) -> None:
        """Give everything back (also usable as a Future done-callback)."""
        held, self.held = self.held, 0
        self.budget.give(held)

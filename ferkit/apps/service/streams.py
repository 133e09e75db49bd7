"""Live streams of the service: one :class:`~ferkit.apps.video.FrameAnalyzer` per client stream.

The web page's camera mode posts its frames to ``/v1/stream/{id}``; each id gets the tracker,
detection schedule, classification budget and smoothing that ``ferkit camera`` runs, so faces keep
their ids, the detector runs only on a schedule or on evidence, and labels are smoothed over time.
State is bounded: at most ``max_streams`` streams, each dropped after ``idle_s`` seconds without a
frame; while all are active a new stream is refused (503).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ferkit.apps.service.upload import ServiceError

#: A stream id (the route's path pattern): what the page makes with ``crypto.randomUUID()``, or any such token.
STREAM_ID = r"^[A-Za-z0-9_-]{8,64}$"


@dataclass(eq=False)
class Stream:
    """One client's live stream: its analyzer, the frame size it was made for and the next frame number."""

    analyzer: Any
    size: tuple[int, int]
    frames: int = 0
    last_used: float = field(default_factory=time.monotonic)
    busy: threading.Lock = field(default_factory=threading.Lock)


class StreamTable:
    """The live streams of one service, thread-safe.

    Args:
        recognizer: the service's shared Recognizer (each stream's analyzer calls it).
        max_streams: streams kept at once; a new one beyond that gets 503 unless one has been idle
            for ``idle_s``.
        idle_s: a stream without a frame for this long is forgotten (its next frame starts afresh).
    """

    def __init__(self, recognizer: Any, max_streams: int = 8, idle_s: float = 30.0):
        self.recognizer = recognizer
        self.max_streams = max_streams
        self.idle_s = idle_s
        self._streams: dict[str, Stream] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)

    def analyze(self, stream_id: str, bgr: Any) -> dict:
        """Track and classify one frame of stream ``stream_id``; the JSON answer.

        Raises:
            ServiceError: 409 when a frame of the same stream is still being analysed (send one at a
                time), 503 when ``max_streams`` streams are active.
        """
        h, w = bgr.shape[:2]
        stream = self._stream(stream_id, (w, h))
        if not stream.busy.acquire(blocking=False):
            raise ServiceError(409, "stream_busy", f"stream {stream_id}: the previous frame is still being "
                               "analysed; send the next one after its answer")
        try:
            t0 = time.perf_counter()
            result = stream.analyzer.process(bgr, stream.frames)
            stream.frames += 1
            stream.last_used = time.monotonic()
            return {"stream": stream_id, "frame": result.index, "width": w, "height": h,
                    "detected": result.detected, "faces": [f.to_dict() for f in result.faces if f.quality is not None],
                    "ended": result.ended, "timings_ms": {"total": (time.perf_counter() - t0) * 1e3}}
        finally:
            stream.busy.release()

    def _stream(self, stream_id: str, size: tuple[int, int]) -> Stream:
        """The stream's state: kept, started afresh (new id, expired, or frames of another size)."""
        from ferkit.apps.video import FrameAnalyzer, VideoOptions

        now = time.monotonic()
        with self._lock:
            for key in [k for k, s in self._streams.items() if now - s.last_used > self.idle_s]:
                del self._streams[key]
            stream = self._streams.get(stream_id)
            if stream is not None and stream.size == size:
                stream.last_used = now
                return stream
            if stream is None and len(self._streams) >= self.max_streams:
                raise ServiceError(503, "too_many_streams", f"{len(self._streams)} live streams are active "
                                   f"(limit {self.max_streams}); retry when one has stopped",
                                   {"Retry-After": str(max(1, round(self.idle_s / 3)))})
            stream = Stream(FrameAnalyzer(self.recognizer, VideoOptions(), size), size, last_used=now)
            self._streams[stream_id] = stream
            return stream

"""Temporal smoothing of each track's emotion probabilities (defined per frame, not per classifier call)."""

from __future__ import annotations

import numpy as np

from ferkit.errors import ConfigError


class Smoother:
    """Temporal smoothing of one track's probabilities; ``update`` once per classifier measurement.

    ``update(frame, probs)`` takes the raw ``(7,)`` probabilities measured on ``frame`` (or None when the
    face was unreadable there) and returns the smoothed probabilities to report (None if unreadable).
    Between measurements the last smoothed value is carried; :attr:`value` holds it.
    """

    value: np.ndarray | None = None

    def update(self, frame: int, probs: np.ndarray | None) -> np.ndarray | None:
        raise NotImplementedError


class NoSmoother(Smoother):
    """No smoothing: the latest measurement as is."""

    def update(self, frame: int, probs: np.ndarray | None) -> np.ndarray | None:
        self.value = None if probs is None else np.asarray(probs, np.float64)
        return self.value


class EmaSmoother(Smoother):
    """Exponential moving average with weight ``alpha`` *per frame*.

    For measurements ``dt`` frames apart the new one gets weight ``1 - (1 - alpha) ** dt`` — the
    same result as per-frame updates with the value held constant in between — so the time constant
    (≈ 1/alpha frames) does not depend on how often the classifier runs. Unreadable frames report None
    but keep the state; the weight rule makes a long gap fade it out.
    """

    def __init__(self, alpha: float):
        if not 0 < alpha <= 1:
            raise ConfigError(f"EMA alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._state: np.ndarray | None = None
        self._frame: int | None = None
        self.value = None

    def update(self, frame: int, probs: np.ndarray | None) -> np.ndarray | None:
        if probs is None:
            self.value = None
            return None
        p = np.asarray(probs, np.float64)
        if self._state is None or self._frame is None:
            self._state = p.copy()
        else:
            dt = max(1, frame - self._frame)
            a = 1.0 - (1.0 - self.alpha) ** dt
            self._state = a * p + (1.0 - a) * self._state
        self._frame = frame
        self.value = self._state.copy()
        return self.value


class WindowSmoother(Smoother):
    """Mean of the readable measurements taken within the last ``window`` frames (inclusive of this one)."""

    def __init__(self, window: int):
        if window < 1:
            raise ConfigError(f"smoothing window must be >= 1 frame, got {window}")
        self.window = int(window)
        self._items: list[tuple[int, np.ndarray]] = []
        self.value = None

    def update(self, frame: int, probs: np.ndarray | None) -> np.ndarray | None:
        # Bounded by `window` entries: constant memory however long the track lives.
        self._items = [(f, p) for f, p in self._items if f > frame - self.window]
        if probs is None:
            self.value = None
            return None
        self._items.append((frame, np.asarray(probs, np.float64)))
        self.value = np.mean([p for _, p in self._items], axis=0)
        return self.value


SMOOTHING_METHODS = ("ema", "window", "none")


def make_smoother(method: str, alpha: float, window: int) -> Smoother:
    """The smoother ``method`` names; its defaults live in :class:`~ferkit.apps.video.options.VideoOptions`."""
    """Smoother by name: ``ema`` (``alpha``), ``window`` (``window`` frames) or ``none``."""
    if method == "ema":
        return EmaSmoother(alpha)
    if method == "window":
        return WindowSmoother(window)
    if method == "none":
        return NoSmoother()
    raise ConfigError(f"unknown smoothing {method!r}; choose one of {', '.join(SMOOTHING_METHODS)}")

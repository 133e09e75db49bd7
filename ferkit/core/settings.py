"""Every default of the inference pipeline, defined once."""

from __future__ import annotations

#: Refuse images above this many pixels, read from the header before decoding (50 MP ≈ 8660×5770).
MAX_PIXELS = 50_000_000

"""Exceptions raised by ferkit. Each message says what failed and what to do."""

from __future__ import annotations


class FerkitError(Exception):
    """Base class of every error ferkit raises on purpose."""


class InputError(FerkitError):
    """An input (file, folder, array, upload) cannot be used."""


class ImageError(InputError):
    """An image cannot be read: missing, empty, not an image, truncated or too large."""


class VideoError(InputError):
    """A video or camera cannot be opened or read."""


class DataError(InputError):
    """A training/evaluation data set is missing, empty or malformed."""


class ModelError(FerkitError):
    """A model name is unknown or a model file cannot be loaded."""


class OutputError(FerkitError):
    """A result cannot be written (missing or unwritable output folder, full disk)."""


class ConfigError(FerkitError, ValueError):
    """A setting or combination of settings cannot be used (a ValueError too, for callers that catch those)."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the limit allows (read from its header, before decoding)."""

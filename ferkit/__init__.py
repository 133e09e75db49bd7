"""ferkit — facial expression recognition: find faces, judge readability, label emotions.

>>> from ferkit import Recognizer
>>> result = Recognizer().analyze("photo.jpg")
>>> for face in result.faces:
...     print(face.box, face.emotion, face.confidence)

Importing ferkit is light: no model is loaded and no heavy module imported
until a :class:`Recognizer` is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ferkit.core.labels import EMOTIONS
from ferkit.core.settings import Settings
from ferkit.errors import (
    ConfigError,
    DataError,
    FerkitError,
    ImageError,
    InputError,
    ModelError,
    OutputError,
    VideoError,
)

__version__ = "0.1.0"

__all__ = [
    "EMOTIONS", "Recognizer", "Settings", "Analysis", "Face", "Quality", "QualityGate", "draw_analysis",
    "FerkitError", "InputError", "ImageError", "VideoError", "DataError", "ModelError", "ConfigError", "OutputError",
    "__version__",
]

_LAZY = {
    "Recognizer": ("recognizer", "Recognizer"),
    "Analysis": ("results", "Analysis"),
    "Face": ("results", "Face"),
    "Quality": ("results", "Quality"),
    "QualityGate": ("quality", "QualityGate"),
    "draw_analysis": ("drawing", "draw_analysis"),
}

if TYPE_CHECKING:
    from ferkit.core.drawing import draw_analysis
    from ferkit.core.quality import QualityGate
    from ferkit.core.recognizer import Recognizer
    from ferkit.core.results import Analysis, Face, Quality


def __getattr__(name: str):
    # Lazy so that `import ferkit` does not pull in OpenCV/onnxruntime.
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f"ferkit.core.{mod}"), attr)
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")

"""Every default of the inference pipeline, defined once, and the one way to set the pipeline up.

A :class:`Settings` says which models run and how; :meth:`Settings.build` (or
``Recognizer(settings)``) turns it into a loaded :class:`~ferkit.core.recognizer.Recognizer`.
Every front end builds its pipeline this way: the CLI maps its flags onto the fields, the
service, video, camera and the Ray engine start from a :data:`PROFILES` entry.

>>> from ferkit import Recognizer, Settings
>>> Recognizer(Settings(model="fernet-e4"))          # the ensemble, for the last point of accuracy
>>> Recognizer(Settings.profile("video"))            # what `ferkit video` and `ferkit camera` run
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ferkit.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from ferkit.core.recognizer import Recognizer

#: The classifier every front end runs unless told otherwise: int8 fernet-m, its mirror view run by the
#: runtime around a one-view graph (70.9 % on FER2013 val; at batch 15 on 2 cores 2,487 faces/s on an
#: AMX Xeon with OpenVINO, 891 there with onnxruntime, 174 on an AVX2-only Zen 3; docs/runtime.md).
DEFAULT_MODEL = "fernet-m-q8"
#: The most accurate shipped classifier (an ensemble, ~40x the cost): ``--model fernet-e4``.
ACCURATE_MODEL = "fernet-e4"
#: The face detector every front end uses unless told otherwise (RetinaFace MobileNet-0.25, shipped).
DEFAULT_DETECTOR = "retinaface"
#: The default model runs its mirror view only for faces whose first view gives no emotion at least this
#: probability: half of FER2013 val's faces (two thirds of a news-photo crowd's), the same val accuracy
#: within one face on each of six networks (70.88 % against 70.91 % for fernet-m-q8), a lower calibration
#: error on five of them (``python benchmarks/adaptive_views.py fernet-m-q8 fernet-e4``; docs/training.md).
#: 1 = always both views.
EXTRA_VIEWS_BELOW = 0.8
#: Inference runtime of every network: ``auto`` = OpenVINO where installed (bf16 where the CPU does it
#: natively, int8 kernels for the quantized classifier), else onnxruntime (:mod:`ferkit.core.runtime`).
DEFAULT_RUNTIME = "auto"
#: Refuse images above this many pixels, read from the header before decoding (50 MP ≈ 8660×5770).
MAX_PIXELS = 50_000_000
#: Languages of the emotion labels (:mod:`ferkit.core.labels`).
DEFAULT_LANG = "en"

#: Video: the detector sees 3/4 of the frame's longer side, kept within these bounds (docs/video.md,
#: real-footage benchmark): 480 px on 640×480 frames (≥ 60 frames/s with 5 faces on a Zen 4), 720 on
#: 1280×720 and larger (its 30 px faces stay above the detector's ~16 px floor; ≥ 30 frames/s).
VIDEO_DETECT_SIZE = (480, 720)

#: How each front end departs from the defaults, and why:
#: - ``photo`` (``ferkit analyze``, the Python API): detector and classifier may use every core.
#: - ``video`` (``ferkit video``/``camera``): two onnxruntime threads, not one, although the loop decodes,
#:   draws and encodes between calls (2-core Zen 3, 640×480, the slowest real-footage clip: 71.5–77.6
#:   frames/s against 59.9–62.4 with one thread; docs/video.md); the detector input follows the frame
#:   size (:func:`video_detect_size`; 480 px when it is not given).
#: - ``service`` (``ferkit serve``) and ``worker`` (the Ray engine): one thread per inference, because
#:   parallelism comes from several requests or workers at once (docs/service.md).
PROFILES: dict[str, dict[str, Any]] = {
    "photo": {},
    "video": {"threads": 2, "detect_size": VIDEO_DETECT_SIZE[0]},
    "service": {"threads": 1},
    "worker": {"threads": 1},
}


@dataclass(frozen=True)
class Settings:
    """How the pipeline is set up. Every field has a default; invalid values raise at once.

    Attributes:
        model: shipped classifier name (``ferkit models``) or path to an ``.onnx`` file.
        detector: detector name (``ferkit models``) or an object with ``detect(image)``.
        detect_size: the detector sees images with their longer side at most this many pixels
            (None = the detector's own default; 0 = always full size). Smaller is faster and
            misses smaller faces.
        threads: inference threads of the classifier and of the detector (0 = one per core; with 1, calls
            from several threads run at once, one per core).
        spin: let the classifier's idle onnxruntime threads busy-wait for its next call. Off by default:
            the spinning threads hold the cores while the detector of the next image runs, which made
            photo after photo 6-18 % slower (2-core Xeon, 2026-12-02: the 15-face crowd scene 40.3-41.9
            against 42.9-45.9 ms, examples/astronauts.jpg 36.1-36.5 against 44.1-44.7) for ~1 ms gained
            in the classifier; the video loop lost a core to it. Detectors never spin.
        quality: quality-gate thresholds that differ from :class:`~ferkit.core.quality.QualityGate`'s
            defaults, e.g. ``{"min_face_size": 30}`` (a ``QualityGate`` is accepted and kept as its fields).
        max_pixels: larger images are refused before decoding (decompression-bomb guard).
        lang: language of the emotion labels in text, JSON ``label`` fields and pictures (``en``, ``zh``).
        extra_views_below: a model whose test-time views run outside its graph (the default) runs the
            views after the first only for faces whose first-view top probability is below this
            (:data:`EXTRA_VIEWS_BELOW`; 1 = every view for every face, 0 = the first view only).
        runtime: ``auto``, ``openvino`` or ``onnxruntime`` (:data:`DEFAULT_RUNTIME`; docs/runtime.md).

    Raises:
        ferkit.errors.ConfigError: a value that cannot be used (says which field and why).
        ferkit.errors.ModelError: ``model`` or ``detector`` is neither a name nor a path/detector.
    """

    model: str = DEFAULT_MODEL
    detector: Any = DEFAULT_DETECTOR
    detect_size: int | None = None
    threads: int = 0
    spin: bool = False
    quality: dict[str, float] = field(default_factory=dict)
    max_pixels: int = MAX_PIXELS
    lang: str = DEFAULT_LANG
    extra_views_below: float = EXTRA_VIEWS_BELOW
    runtime: str = DEFAULT_RUNTIME

    def __post_init__(self) -> None:
        import os

        if not isinstance(self.model, (str, os.PathLike)) or not str(self.model):
            raise ModelError(f"model must be a shipped model name (see `ferkit models`) or a path to an .onnx "
                              f"file, got {self.model!r}")
        object.__setattr__(self, "model", str(self.model))
        if not isinstance(self.detector, str) and not callable(getattr(self.detector, "detect", None)):
            raise ModelError(f"detector must be a detector name (see `ferkit models`) or an object with a "
                              f"detect(image) method, got {type(self.detector).__name__}")
        if self.detect_size is not None:
            _check_int("detect_size", self.detect_size, low=0)
        _check_int("threads", self.threads, low=0)
        if not isinstance(self.spin, bool):
            raise ConfigError(f"spin must be True or False, got {self.spin!r}")
        _check_int("max_pixels", self.max_pixels, low=1)
        if (isinstance(self.extra_views_below, bool) or not isinstance(self.extra_views_below, numbers.Real)
                or not 0 <= self.extra_views_below <= 1):
            raise ConfigError(f"extra_views_below must be a probability in [0, 1], got {self.extra_views_below!r}")
        object.__setattr__(self, "quality", _quality_dict(self.quality))
        from ferkit.core.runtime import check_runtime_name

        check_runtime_name(self.runtime)
        from ferkit.core.labels import LANGUAGES

        if self.lang not in LANGUAGES:
            raise ConfigError(f"unknown label language {self.lang!r}; choose one of {', '.join(LANGUAGES)}")

    @classmethod
    def profile(cls, name: str, frame_size: tuple[int, int] | None = None, **overrides: Any) -> Settings:
        """The settings a front end starts from (:data:`PROFILES`), with ``overrides`` on top.

        Overrides that are None are ignored, so unset command-line flags keep the profile's value.
        ``frame_size`` (width, height) of a video's frames sets the ``video`` profile's detector input
        (:func:`video_detect_size`) unless ``detect_size`` is given.
        """
        if name not in PROFILES:
            raise ConfigError(f"unknown settings profile {name!r}; choose one of {', '.join(PROFILES)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if name == "video" and frame_size is not None and "detect_size" not in given:
            given["detect_size"] = video_detect_size(*frame_size)
        unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
        return cls(**{**PROFILES[name], **given})

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated like a new one)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for JSON, or to rebuild the same pipeline elsewhere, e.g. on a Ray worker)."""
        d = dataclasses.asdict(self)
        if not isinstance(self.detector, str):
            d["detector"] = getattr(self.detector, "name", type(self.detector).__name__)
        return d

    def build(self) -> Recognizer:
        """Load the models: the :class:`~ferkit.core.recognizer.Recognizer` these settings describe."""
        from ferkit.core.recognizer import Recognizer

        return Recognizer(self)


def _check_int(name: str, value: Any, low: int) -> None:
    """ConfigError unless ``value`` is an integer (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _quality_dict(quality: Any) -> dict[str, float]:
    """``quality`` as a dict of QualityGate fields; ConfigError unless it maps field names to numbers."""
    from ferkit.core.quality import QualityGate

    if isinstance(quality, QualityGate):
        return dataclasses.asdict(quality)
    if not isinstance(quality, dict):
        raise ConfigError(f"quality must be a dict of QualityGate fields, got {type(quality).__name__}")
    known = {f.name for f in dataclasses.fields(QualityGate)}
    unknown = sorted(str(k) for k in quality if k not in known)
    if unknown:
        raise ConfigError(f"unknown quality setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    for k, v in quality.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ConfigError(f"quality setting {k} must be a number, got {v!r}")
    return dict(quality)


def video_detect_size(width: int, height: int) -> int:
    """The detector's input size (longer side, px) for video frames of ``width × height``.

    Three quarters of the longer side, within :data:`VIDEO_DETECT_SIZE`: 640×480 → 480, 1280×720 → 720,
    1920×1080 → 720; frames smaller than the lower bound are not upscaled (the detector never does).
    """
    low, high = VIDEO_DETECT_SIZE
    return int(min(max(round(0.75 * max(width, height)), low), high))

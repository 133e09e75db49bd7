"""Emotion-classifier runtime on OpenVINO or onnxruntime (no torch needed; :mod:`ferkit.core.runtime`).

Shipped models live in ``ferkit/weights/``: ``NAME.onnx`` (logits out), a
machine-readable ``NAME.json`` (input size, softmax temperature fitted on
validation data, test-time views, measured accuracy) and a human model card
``NAME.md``. Any ``.onnx`` path works wherever a name does; its ``.json``
sidecar is optional.

A model's test-time views (``tta``: none, flip, tencrop) are either inside its
graph (``ferkit export``'s form, portable to any ONNX runtime) or, where the
sidecar says ``"tta_in_graph": false``, run here around a one-view graph: the
same arithmetic, and a caller may then ask for one view per face
(:meth:`EmotionClassifier.logits`), which is how video spreads the default
model's mirror view over consecutive frames of a track at half the cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.core.labels import EMOTIONS
from ferkit.core.preprocess import TTA_VIEWS, prepare_batch, tta_views
from ferkit.core.runtime import open_session
from ferkit.core.settings import DEFAULT_MODEL, DEFAULT_RUNTIME, EXTRA_VIEWS_BELOW
from ferkit.errors import ConfigError, ModelError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits divided by ``temperature`` (the calibration of a model)."""
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass
class ModelInfo:
    """What the runtime needs to know about an ONNX classifier (from its ``.json`` sidecar)."""

    name: str
    path: Path
    input_size: int = 48
    temperature: float = 1.0
    meta: dict | None = None


def tta_mode(meta: dict) -> str:
    """The test-time views a model is run with, from its sidecar (``flip`` when it does not say)."""
    return meta.get("tta", "flip")


def tta_in_graph(meta: dict) -> bool:
    """Whether those views are inside the graph (True unless the sidecar says ``"tta_in_graph": false``)."""
    return bool(meta.get("tta_in_graph", True))


def list_models() -> list[str]:
    """Names of the classifiers shipped inside the package."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.onnx"))


def resolve_model(name_or_path: str | Path = DEFAULT_MODEL) -> ModelInfo:
    """Find a shipped model by name, or an ``.onnx`` file by path, and read its sidecar."""
    p = Path(name_or_path)
    if p.suffix.lower() == ".onnx" or p.exists():
        if not p.is_file():
            raise ModelError(f"{p}: model file not found")
        path = p
    else:
        path = WEIGHTS_DIR / f"{name_or_path}.onnx"
        if not path.is_file():
            shipped = ", ".join(list_models()) or "none"
            raise ModelError(f"unknown model {str(name_or_path)!r}; shipped models: {shipped}; "
                             "or pass the path of an .onnx file exported by `ferkit export`")
    meta: dict = {}
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise ModelError(f"{side}: not valid JSON ({e})") from None
    return ModelInfo(name=path.stem, path=path, input_size=int(meta.get("input_size", 48)),
                     temperature=float(meta.get("temperature", 1.0)), meta=meta)


class EmotionClassifier:
    """Batched emotion classification of aligned grey face crops.

    Args:
        model: shipped model name (see :func:`list_models`) or path to an ``.onnx`` file.
        threads: inference threads (None = one per core).
        calibrated: apply the model's fitted softmax temperature (recommended).
        spin: idle onnxruntime threads busy-wait for the next call (:func:`~ferkit.core.runtime.open_session`).
        extra_views_below: for a model whose test-time views run here, run the views after the first
            only for faces whose first-view top probability (at the model's fitted temperature) is
            below this; 1 = every view for every face, as the model's own graph would
            (:data:`~ferkit.core.settings.EXTRA_VIEWS_BELOW`).
        runtime: inference runtime (:func:`~ferkit.core.runtime.open_session`; ``auto`` = the best installed).
    """

    def __init__(self, model: str | Path = DEFAULT_MODEL, threads: int | None = None, calibrated: bool = True,
                 spin: bool = True, extra_views_below: float = EXTRA_VIEWS_BELOW, runtime: str = DEFAULT_RUNTIME):
        self.info = resolve_model(model)
        self.extra_views_below = float(extra_views_below)
        self.name = self.info.name
        self.input_size = self.info.input_size
        self.temperature = self.info.temperature if calibrated else 1.0
        self.session = open_session(self.info.path, threads, spin, runtime)
        meta = self.info.meta or {}
        self.tta = tta_mode(meta)
        if self.tta not in TTA_VIEWS:
            raise ModelError(f"{self.info.path.with_suffix('.json')}: unknown tta {self.tta!r}")
        #: test-time views this runtime runs around the graph (1 when they are inside it): a caller
        #: of :meth:`logits` may pick one of them per face
        self.runtime_views = 1 if tta_in_graph(meta) else TTA_VIEWS[self.tta]
        # faces per inference call: 64 images with the test-time views, which bounds peak memory (a
        # ten-crop model turns 64 faces into 640 images, ~2 GB of activations) at no cost in speed
        # (faces/s measured flat from batch 1 to 64 for the shipped models)
        self.chunk = max(1, 64 // TTA_VIEWS[self.tta])
        width = self.session.output_widths[0]
        if width not in (len(EMOTIONS), None):
            raise ModelError(f"{self.info.path}: outputs {width} classes, expected {len(EMOTIONS)}")

    def logits(self, batch: np.ndarray, views: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Normalised float input ``(N, 1, S, S)`` → raw logits ``(N, 7)``, averaged over the test-time views.

        Args:
            views: for a model whose views run here (``runtime_views > 1``), the one view to run for each
                face instead (0 = as is, 1 = mirrored, …; :func:`~ferkit.core.preprocess.tta_views` order),
                at ``1 / runtime_views`` of the cost.

        Raises:
            ferkit.errors.ConfigError: ``views`` for a model whose views are inside its graph, or out of range.
        """
        if len(batch) == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        batch = np.ascontiguousarray(batch, np.float32)
        pick = self._check_views(views, len(batch))
        out = []
        for i in range(0, len(batch), self.chunk):
            part = batch[i:i + self.chunk]
            if self.runtime_views == 1:
                out.append(self._run(part))
                continue
            every = tta_views(part, self.tta, self.input_size)
            if pick is None:
                out.append(self._mean_over_views(every))
            else:
                chosen = pick[i:i + self.chunk]
                out.append(self._run(np.stack([every[v][j] for j, v in enumerate(chosen)])))
        return np.concatenate(out)

    def predict(self, crops: list[np.ndarray] | np.ndarray, views: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Grey face crops (uint8, ideally aligned ``S``×``S``) → calibrated probabilities ``(N, 7)``
        (``views``: see :meth:`logits`)."""
        return softmax(self.logits(prepare_batch(list(crops), self.input_size), views), self.temperature)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(x)[0]

    def _mean_over_views(self, every: list[np.ndarray]) -> np.ndarray:
        """Each face's logits averaged over its views; faces the first view is sure of keep its logits.

        Where the first view's top probability reaches ``extra_views_below`` a second view rarely changes
        the label: at 0.8 half the faces skip it and FER2013 val accuracy moved by at most one face in
        3,589 on six networks (``benchmarks/adaptive_views.py``).
        """
        if self.extra_views_below >= 1:  # all views in one call, then each face's mean (as in a graph)
            return self._run(np.concatenate(every)).reshape(len(every), len(every[0]), -1).mean(0)
        logits = self._run(every[0])
        unsure = np.flatnonzero(softmax(logits, self.info.temperature).max(1) < self.extra_views_below)
        if unsure.size:
            rest = self._run(np.concatenate([v[unsure] for v in every[1:]])).reshape(len(every) - 1, unsure.size, -1)
            logits[unsure] = (logits[unsure] + rest.sum(0)) / len(every)
        return logits

    def _check_views(self, views: np.ndarray | list[int] | None, n: int) -> np.ndarray | None:
        if views is None:
            return None
        if self.runtime_views == 1:
            raise ConfigError(f"{self.name}: its test-time views are inside its graph and cannot be run one at "
                              "a time (only models whose sidecar says \"tta_in_graph\": false can)")
        pick = np.asarray(views, np.int64).reshape(-1)
        if len(pick) != n or (pick < 0).any() or (pick >= self.runtime_views).any():
            raise ConfigError(f"views must give one view in 0..{self.runtime_views - 1} per face "
                              f"({n} faces), got {list(pick)}")
        return pick

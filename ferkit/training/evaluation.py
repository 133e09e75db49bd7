"""Evaluate a classifier on any labelled face set: accuracy, macro-F1, per-class
precision/recall, confusion-matrix PNG, optional test-time augmentation and
temperature-scaling calibration (ECE before/after).

Works with shipped model names and ``.onnx`` files (on the Recognizer's runtime unless told
otherwise: what is scored is what users run) and with training checkpoints (``.pt``, needs torch).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferkit.core.classification import softmax
from ferkit.core.labels import EMOTIONS
from ferkit.core.plots import confusion_matrix_image, save_png
from ferkit.core.preprocess import prepare_batch, tta_views
from ferkit.core.settings import DEFAULT_RUNTIME, EXTRA_VIEWS_BELOW
from ferkit.errors import ModelError
from ferkit.training.data import load_faces
from ferkit.training.metrics import expected_calibration_error, fit_temperature, summarize


@dataclass
class LogitModel:
    """A loaded model as evaluation sees it: normalised batch → logits, its input size, name and temperature."""

    run: Callable[[np.ndarray], np.ndarray]
    input_size: int
    name: str
    temperature: float = 1.0
    runtime: str = "torch"


def load_logit_model(model: str | Path | LogitModel, extra_views_below: float = EXTRA_VIEWS_BELOW,
                     runtime: str = DEFAULT_RUNTIME) -> LogitModel:
    """Load a shipped name, ``.onnx`` or training checkpoint ``.pt`` once (a :class:`LogitModel` is returned as is).

    ``extra_views_below``: for a model whose test-time views run outside its graph, when the views after
    the first run (:class:`~ferkit.core.classification.EmotionClassifier`); the default is what the
    Recognizer does, 1 measures the model with every view on every face. ``runtime``: the inference
    runtime of ``.onnx`` models (:func:`ferkit.core.runtime.open_session`).
    """
    if isinstance(model, LogitModel):
        return model
    p = Path(model)
    if p.suffix == ".pt":
        if not p.is_file():
            raise ModelError(f"{p}: checkpoint not found")
        try:
            import torch

            from ferkit.training.loop import load_checkpoint
        except ImportError as e:
            raise ModelError(f"evaluating a .pt checkpoint needs torch: pip install 'ferkit[train]' ({e})") from None
        net, cfg = load_checkpoint(p)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()

        return LogitModel(run, cfg.input_size, str(p))
    from ferkit.core.classification import EmotionClassifier

    clf = EmotionClassifier(model, calibrated=False, extra_views_below=extra_views_below, runtime=runtime)
    return LogitModel(clf.logits, clf.input_size, clf.name, clf.info.temperature, clf.session.runtime)


def predict_logits(model: str | Path | LogitModel, images: np.ndarray, tta: str = "none", batch: int = 256,
                   progress: bool = False, extra_views_below: float = EXTRA_VIEWS_BELOW) -> np.ndarray:
    """Logits ``(N, 7)`` of uint8 face images, averaged over the TTA views (``progress``: a bar on stderr)."""
    from tqdm import tqdm

    loaded = load_logit_model(model, extra_views_below)
    run, size = loaded.run, loaded.input_size
    if images.shape[1:] != (size, size):
        images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
    views = tta_views(images, tta, size)
    total = np.zeros((len(images), len(EMOTIONS)), np.float64)
    bar = tqdm(total=len(images) * len(views), unit="face", desc="predicting", disable=not progress)
    for v in views:
        v = np.ascontiguousarray(v)
        for i in range(0, len(v), batch):
            total[i:i + batch] += run(prepare_batch(list(v[i:i + batch]), size))
            bar.update(len(v[i:i + batch]))
    bar.close()
    return (total / len(views)).astype(np.float32)


def evaluate(data: str | Path, model: str | Path, split: str | None = None, tta: str = "none",
             calibrate: bool = False, out_dir: str | Path | None = None, skip_bad: bool = False,
             extra_views_below: float = EXTRA_VIEWS_BELOW, runtime: str = DEFAULT_RUNTIME) -> dict:
    """Evaluate ``model`` on a labelled set; writes ``confusion_matrix.png`` and ``metrics.json`` to ``out_dir``.

    ``extra_views_below``, ``runtime``: see :func:`load_logit_model` (the defaults score what the Recognizer runs).
    """
    fs = load_faces(data, split, skip_bad=skip_bad)
    loaded = load_logit_model(model, extra_views_below, runtime)
    name, temperature = loaded.name, loaded.temperature
    logits = predict_logits(loaded, fs.images, tta)
    probs = softmax(logits, temperature)
    report = summarize(fs.labels, probs, EMOTIONS)
    report.update({"model": name, "data": str(data), "split": split, "tta": tta, "skipped": len(fs.skipped),
                   "extra_views_below": extra_views_below, "runtime": loaded.runtime,
                   "temperature": temperature, "ece": expected_calibration_error(fs.labels, probs)})
    if calibrate:
        report["calibration"] = cross_fitted_calibration(logits, fs.labels)
    if out_dir:
        out = Path(out_dir)
        from ferkit.core.writers import ensure_writable_dir

        ensure_writable_dir(out)
        title = f"{name} on {data}{'/' + split if split else ''} (tta {tta}): acc {report['accuracy']:.3f}"
        report["confusion_png"] = str(save_png(out / "confusion_matrix.png",
                                               confusion_matrix_image(report["confusion"], EMOTIONS, title)))
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def cross_fitted_calibration(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Temperature scaling with 2-fold cross-fitting: T fitted on one half, ECE measured on the other,
    so the 'after' figure is not measured on the data T was fitted to."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(labels))
    halves = [idx[: len(idx) // 2], idx[len(idx) // 2:]]
    before, after, temps = [], [], []
    for fit, test in (halves, halves[::-1]):
        t = fit_temperature(logits[fit], labels[fit])
        temps.append(t)
        before.append(expected_calibration_error(labels[test], softmax(logits[test])))
        after.append(expected_calibration_error(labels[test], softmax(logits[test], t)))
    return {"temperature_full": fit_temperature(logits, labels), "temperature_folds": temps,
            "ece_before": float(np.mean(before)), "ece_after": float(np.mean(after))}


def print_report(r: dict) -> None:
    """Human-readable summary of :func:`evaluate`'s report."""
    print(f"model {r['model']} on {r['data']}{'/' + r['split'] if r['split'] else ''}: n={r['n']}, tta={r['tta']}, "
          f"runtime={r['runtime']}")
    print(f"accuracy {r['accuracy']:.4f}   macro-F1 {r['macro_f1']:.4f}   ECE {r['ece']:.4f} (T={r['temperature']})")
    print(f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for c, m in r["per_class"].items():
        print(f"{c:<10}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>9d}")
    if "calibration" in r:
        c = r["calibration"]
        print(f"temperature scaling (2-fold cross-fitted): ECE {c['ece_before']:.4f} → {c['ece_after']:.4f}, "
              f"T={c['temperature_full']:.3f}")
    if r.get("skipped"):
        print(f"skipped {r['skipped']} unreadable/unknown files")
    if r.get("confusion_png"):
        print(f"confusion matrix: {r['confusion_png']}")

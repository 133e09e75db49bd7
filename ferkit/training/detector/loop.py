"""``ferkit train-detector``: train a face detector from scratch or fine-tune the shipped one.

One epoch = every training image once, each as a random square crop (``crop_min``–1 of its
shorter side), colour-jittered, maybe mirrored, resized to ``size × size``. Anchors are matched
to the faces (:mod:`.anchors`), the loss is smooth-L1 on the offsets plus cross-entropy with
hard-negative mining (or focal loss). There is no landmark loss — none of the supported formats
has landmarks — and the landmark head is frozen, so a fine-tuned RetinaFace keeps the shipped
landmarks. SGD with momentum; a linear warm-up then a cosine decay, on the step count or, with
``time_budget``, on the clock. ``out/last.pt`` is written after every epoch (and when the budget
stops a run mid-epoch); ``out/log.csv`` gets one row per epoch.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ferkit.core import geometry
from ferkit.core.detection.base import nms
from ferkit.core.detection.metrics import detection_scores
from ferkit.core.detection.retinaface import MEAN, WEIGHTS, decode, priors
from ferkit.errors import ConfigError, DataError, ModelError
from ferkit.training.checkpoint import read_checkpoint
from ferkit.training.detector.anchors import anchor_boxes, batch_targets, multibox_loss
from ferkit.training.detector.config import DetectorTrainConfig
from ferkit.training.detector.data import BoxSample, load_boxes, parse_folds
from ferkit.training.detector.models import build_model, load_retinaface_onnx


def augment(image: np.ndarray, boxes: np.ndarray, size: int, rng: np.random.Generator, crop_min: float = 0.3,
            min_face: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """BGR uint8 image and ``(N, 4)`` corner boxes → a ``size × size`` training view and its boxes.

    A random square crop (side ``crop_min``–1 × the shorter side) keeping the faces whose centre
    falls inside it (clipped; tried up to 30 times to keep at least one face, then the centred
    full square); colour jitter in HSV (brightness, contrast, saturation, hue); mirror with p = 0.5.
    """
    h, w = image.shape[:2]
    short = min(h, w)
    crop, kept = None, np.zeros((0, 4), np.float32)
    for attempt in range(31):
        if attempt < 30:
            side = int(short * rng.uniform(crop_min, 1.0))
            x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        else:
            side = short
            x0, y0 = (w - side) // 2, (h - side) // 2
        if len(boxes) == 0:
            crop = (x0, y0, side)
            break
        c = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (c[:, 0] >= x0) & (c[:, 0] < x0 + side) & (c[:, 1] >= y0) & (c[:, 1] < y0 + side)
        if inside.any() or attempt == 30:
            crop = (x0, y0, side)
            kept = boxes[inside].copy()
            break
    x0, y0, side = crop
    view = image[y0:y0 + side, x0:x0 + side]
    scale = size / side
    view = cv2.resize(view, (size, size), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if len(kept):
        kept -= np.array([x0, y0, x0, y0], np.float32)
        kept = np.clip(kept, 0, side) * scale
        wh = kept[:, 2:] - kept[:, :2]
        kept = kept[(wh >= min_face).all(1)]
    view = _jitter(view, rng)
    if rng.random() < 0.5:
        view = view[:, ::-1]
        if len(kept):
            kept = np.stack([size - kept[:, 2], kept[:, 1], size - kept[:, 0], kept[:, 3]], 1)
    return np.ascontiguousarray(view), kept.astype(np.float32)


def _jitter(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = bgr.astype(np.float32)
    if rng.random() < 0.5:
        img += rng.uniform(-32, 32)
    if rng.random() < 0.5:
        img = (img - 128) * rng.uniform(0.6, 1.4) + 128
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[:, :, 1] = np.clip(hsv[:, :, 1] * rng.uniform(0.6, 1.4), 0, 255)
        hsv[:, :, 0] = (hsv[:, :, 0] + rng.uniform(-9, 9)) % 180
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    return img


def to_input(bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 ``(H, W, 3)`` → the nets' ``(3, H, W)`` float32 (BGR minus :data:`MEAN`)."""
    return (bgr.astype(np.float32) - MEAN).transpose(2, 0, 1)


class ImageCache:
    """Decoded training images, kept in memory for small sets (≤ ``limit`` images)."""

    def __init__(self, samples: list[BoxSample], limit: int = 3000):
        self.keep = len(samples) <= limit
        self._images: dict[str, np.ndarray] = {}

    def get(self, s: BoxSample) -> np.ndarray:
        img = self._images.get(s.key)
        if img is None:
            img = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f"{s.path}: cannot read image")
            if self.keep:
                self._images[s.key] = img
        return img


def corners(xywh: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``x, y, w, h`` → float32 corners (:func:`ferkit.core.geometry.corners`)."""
    return geometry.corners(xywh).astype(np.float32)


@torch.no_grad()
def predict(model: nn.Module, bgr: np.ndarray, threshold: float = 0.02, nms_threshold: float = 0.4,
            canvas: tuple[int, int] | None = None) -> np.ndarray:
    """A torch detector on one full BGR image → ``(K, 5)`` rows ``x, y, w, h, score`` (the ONNX path's decoding).

    canvas: pad to this ``(height, width)`` (mean colour, right and bottom) so that every image of
    a validation pass has one shape: torch's CPU kernels are re-planned for every new shape.
    """
    h, w = bgr.shape[:2]
    ph, pw = max(h, 32, canvas[0] if canvas else 0), max(w, 32, canvas[1] if canvas else 0)
    x = np.zeros((1, 3, ph, pw), np.float32)
    x[0, :, :h, :w] = to_input(bgr)
    loc, conf, marks = model(torch.from_numpy(x))
    prob = torch.softmax(conf[0], -1)[:, 1].numpy()
    cand = np.flatnonzero(prob > threshold)
    if cand.size > 1000:
        cand = cand[np.argpartition(-prob[cand], 1000)[:1000]]
    boxes, _ = decode(loc[0].numpy()[cand], marks[0].numpy()[cand], priors(ph, pw)[cand])
    keep = nms(boxes, prob[cand], nms_threshold)
    boxes, scores = boxes[keep], prob[cand][keep]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores[:, None]])


def validate(model: nn.Module, samples: list[BoxSample], cache: ImageCache, iou: float = 0.5) -> float:
    """AP at ``iou`` of ``model`` on full-size ``samples`` (padded to one shape, a multiple of 32)."""
    model.eval()
    shapes = np.array([cache.get(s).shape[:2] for s in samples])
    canvas = tuple(int(v) for v in -(-shapes.max(0) // 32) * 32)
    preds = {s.key: predict(model, cache.get(s), canvas=canvas).tolist() for s in samples}
    _train_mode(model)
    return detection_scores({s.key: s.boxes for s in samples}, preds, iou)["ap"]


def build(cfg: DetectorTrainConfig) -> nn.Module:
    """The net ``cfg`` asks for, with its initial weights (shipped RetinaFace, a checkpoint or random)."""
    if cfg.init == "retinaface":
        if cfg.arch != "retinaface":
            raise ConfigError("--init retinaface needs --arch retinaface (the shipped weights are RetinaFace's)")
        return load_retinaface_onnx(build_model("retinaface"), WEIGHTS)
    model = build_model(cfg.arch, **({"width": cfg.width} if cfg.arch == "blazeface" else {}))
    if cfg.init:
        ck = _read_checkpoint(cfg.init)
        if ck["config"]["arch"] != cfg.arch:
            raise ConfigError(f"{cfg.init}: a {ck['config']['arch']} checkpoint, not {cfg.arch}")
        model.load_state_dict(ck["model"])
    return model


def _read_checkpoint(path: str | Path) -> dict:
    p = Path(path)
    ck = read_checkpoint(p, what="detector checkpoint")
    if "detector" not in ck:
        raise ModelError(f"{p}: not a ferkit detector checkpoint")
    return ck


def load_detector_checkpoint(path: str | Path) -> tuple[nn.Module, DetectorTrainConfig, dict]:
    """A ``train-detector`` checkpoint → (model in eval mode, its config, the raw checkpoint)."""
    ck = _read_checkpoint(path)
    cfg = DetectorTrainConfig.from_dict(ck["config"])
    model = build_model(cfg.arch, **({"width": cfg.width} if cfg.arch == "blazeface" else {}))
    model.load_state_dict(ck["model"])
    return model.eval(), cfg, ck


def _train_mode(model: nn.Module) -> None:
    """Training mode, except frozen BatchNorm layers (their running statistics stay as they are)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


_BACKBONE = ("fx.", "stem.", "s4.", "s8.", "s16.", "s32.")


def _trainable(name: str, freeze: str) -> bool:
    """Whether parameter ``name`` is trained under ``--freeze`` (the landmark head never is)."""
    if freeze == "backbone":
        return not name.startswith(_BACKBONE)
    if freeze == "features":
        return name.startswith(("bbox_head.", "class_head."))
    return True


def _lr_factor(cfg: DetectorTrainConfig, step: int, total_steps: int, elapsed: float) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = step / max(total_steps, 1)
    if cfg.time_budget > 0:
        progress = max(progress, elapsed / cfg.time_budget)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * 0.99 + 0.01


def _complete(cfg: DetectorTrainConfig) -> DetectorTrainConfig:
    """``cfg`` checked, with the architecture and learning rate it leaves to be chosen filled in."""
    for name, ok in (("epochs", cfg.epochs >= 1), ("batch_size", cfg.batch_size >= 1), ("size", cfg.size >= 32),
                     ("crop_min", 0 < cfg.crop_min <= 1), ("lr", cfg.lr >= 0), ("threads", cfg.threads >= 1)):
        if not ok:
            raise ConfigError(f"--{name.replace('_', '-')} out of range: {getattr(cfg, name)}")
    if not cfg.arch:
        arch = "retinaface" if cfg.init == "retinaface" else (
            _read_checkpoint(cfg.init)["config"]["arch"] if cfg.init else "blazeface")
        cfg = DetectorTrainConfig.from_dict({**asdict(cfg), "arch": arch})
    if not cfg.lr:
        cfg = DetectorTrainConfig.from_dict({**asdict(cfg), "lr": 1e-4 if cfg.init else 2e-3})
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ConfigError(f"--optimizer must be adamw or sgd, got {cfg.optimizer!r}")
    if cfg.freeze not in ("", "backbone", "features"):
        raise ConfigError(f"--freeze must be backbone or features, got {cfg.freeze!r}")
    if cfg.cls_loss not in ("ce", "focal"):
        raise ConfigError(f"--cls-loss must be ce or focal, got {cfg.cls_loss!r}")
    return cfg


def _optimizer(model: nn.Module, cfg: DetectorTrainConfig) -> torch.optim.Optimizer:
    """Freeze what is not trained (the landmark head always: no landmark labels), then the optimiser."""
    for p in model.landmark_parameters():  # no landmark labels: keep that head exactly as it is
        p.requires_grad_(False)
    for name, p in model.named_parameters():
        if not _trainable(name, cfg.freeze):
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # AdamW by default: the shipped net has its BatchNorm folded into the convolutions, which
    # leaves gradient norms in the hundreds; SGD diverges on it even at lr 1e-4, AdamW does not.
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    return opt


def _step(model: nn.Module, opt: torch.optim.Optimizer, cfg: DetectorTrainConfig, batch: list, cache: ImageCache,
          anchors: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """One optimiser step on augmented views of ``batch``; returns (loss, box loss, class loss)."""
    views, boxes = zip(*(augment(cache.get(s), corners(s.boxes), cfg.size, rng, cfg.crop_min, cfg.min_face)
                         for s in batch))
    x = torch.from_numpy(np.stack([to_input(v) for v in views]))
    labels, targets = batch_targets(list(boxes), anchors, cfg.pos_iou, cfg.neg_iou)
    loc, conf, _ = model(x)
    loss, box_l, cls_l = multibox_loss(loc, conf, labels, targets, cfg.neg_ratio, cfg.cls_loss)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return np.array([float(loss.detach()), float(box_l), float(cls_l)])


def _inputs(cfg: DetectorTrainConfig, resume: bool, last: Path) -> tuple[DetectorTrainConfig, dict | None, list, list]:
    """(settings, checkpoint to resume or None, training samples, validation samples)."""
    state: dict | None = None
    if resume:
        if not last.is_file():
            raise ConfigError(f"{last}: nothing to resume (no checkpoint in {last.parent})")
        state = _read_checkpoint(last)
        saved = DetectorTrainConfig.from_dict(state["config"])
        # The run continues with its own settings; only the length and the budget may change.
        cfg = DetectorTrainConfig.from_dict({**asdict(saved), "epochs": cfg.epochs, "time_budget": cfg.time_budget})
    samples = load_boxes(cfg.data, cfg.split, parse_folds(cfg.folds), cfg.format or None)
    val = load_boxes(cfg.data, "val" if cfg.split == "train" and cfg.format == "wider" else cfg.split,
                     parse_folds(cfg.val_folds), cfg.format or None) if cfg.val_folds else []
    return cfg, state, samples, val


def _restore(cfg: DetectorTrainConfig, state: dict | None) -> tuple[nn.Module, torch.optim.Optimizer, tuple, str]:
    """Model and optimiser (from ``state`` when resuming), the progress counters, and where landmarks come from."""
    model = build(cfg) if state is None else build_model(cfg.arch, **(
        {"width": cfg.width} if cfg.arch == "blazeface" else {}))
    opt = _optimizer(model, cfg)
    epoch, step, elapsed, history, best = 0, 0, 0.0, [], -1.0
    landmarks = "shipped" if cfg.init == "retinaface" else (
        _read_checkpoint(cfg.init).get("landmarks", "none") if cfg.init else "none")
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, step, elapsed = state["epoch"], state["step"], state["elapsed"]
        history, best = state.get("history", []), state.get("best_ap", -1.0)
    return model, opt, (epoch, step, elapsed, history, best), landmarks


def train_detector(cfg: DetectorTrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Run ``cfg`` (or continue ``out/last.pt`` with ``resume``); returns a summary dict.

    Raises:
        ferkit.errors.DataError / ConfigError / ModelError: bad data, settings or checkpoint.
    """
    cfg = _complete(cfg)
    out = Path(cfg.out)
    last = out / "last.pt"
    cfg, state, samples, val = _inputs(cfg, resume, last)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, opt, (epoch, step, elapsed, history, best), landmarks = _restore(cfg, state)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    cache = ImageCache(samples + val)
    anchors = anchor_boxes(cfg.size, cfg.size)
    steps_per_epoch = math.ceil(len(samples) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    _train_mode(model)
    stopped = False
    summary: dict = {"epochs_done": epoch, "resumed_from": epoch if state is not None else None}
    run_start, before = time.perf_counter(), elapsed

    def clock() -> float:  # wall seconds of the whole run so far, earlier sessions included
        return before + time.perf_counter() - run_start

    while epoch < cfg.epochs and not stopped:
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(samples))
        t0 = time.perf_counter()
        sums = np.zeros(3)
        n_steps = 0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(cfg, step, total_steps, clock())
            sums += _step(model, opt, cfg, [samples[i] for i in idx], cache, anchors, rng)
            step += 1
            n_steps += 1
            if progress:
                print(f"\repoch {epoch + 1}/{cfg.epochs} step {b + 1}/{steps_per_epoch} loss {sums[0] / n_steps:.3f} "
                      f"(box {sums[1] / n_steps:.3f} cls {sums[2] / n_steps:.3f})", end="", file=sys.stderr, flush=True)
            if cfg.time_budget > 0 and clock() >= cfg.time_budget:
                stopped = True
                break
        epoch_s = time.perf_counter() - t0
        epoch += 1
        row = {"epoch": epoch, "steps": n_steps, "partial": int(n_steps < steps_per_epoch),
               "loss": round(sums[0] / max(n_steps, 1), 5), "box_loss": round(sums[1] / max(n_steps, 1), 5),
               "cls_loss": round(sums[2] / max(n_steps, 1), 5), "lr": round(opt.param_groups[0]["lr"], 7),
               "seconds": round(epoch_s, 2)}
        if val:
            tv = time.perf_counter()
            row["val_ap50"] = round(validate(model, val, cache), 5)
            row["val_seconds"] = round(time.perf_counter() - tv, 2)
        elapsed = clock()
        row["elapsed"] = round(elapsed, 2)
        stopped = stopped or (cfg.time_budget > 0 and elapsed >= cfg.time_budget)
        history.append(row)
        if progress:
            extra = f" val AP@0.5 {row['val_ap50']:.4f}" if val else ""
            print(f"\repoch {epoch}/{cfg.epochs} loss {row['loss']:.4f} (box {row['box_loss']:.4f} "
                  f"cls {row['cls_loss']:.4f}){extra} {epoch_s:.1f}s" + (" [time budget reached]" if stopped else ""),
                  file=sys.stderr, flush=True)
        ck = {"detector": 1, "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
              "step": step, "elapsed": elapsed, "config": asdict(cfg), "history": history,
              "n_train_images": len(samples), "best_ap": best, "landmarks": landmarks}
        if val and row["val_ap50"] > best:
            best = ck["best_ap"] = row["val_ap50"]
            torch.save(ck, out / "best.pt")
        torch.save(ck, out / "last.pt.tmp")
        Path(out / "last.pt.tmp").replace(last)
        _write_log(out / "log.csv", history)
    summary.update({"epochs_done": epoch, "steps": step, "elapsed": elapsed, "history": history,
                    "checkpoint": str(last), "stopped_by_budget": stopped, "n_train_images": len(samples)})
    if val:
        summary["best_val_ap50"] = best
    return summary


def _write_log(path: Path, history: list[dict]) -> None:
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(history)

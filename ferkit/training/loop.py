"""Train emotion classifiers on FER2013-style data (needs the ``train`` extra: torch).

A run is fully described by :class:`TrainConfig`; the config is written into
every checkpoint, the CSV log and later the model card, so any shipped number
can be reproduced. Checkpoints are written every epoch (``last.pt``) and on
improvement (``best.pt``); ``resume=True`` continues an interrupted run from
``last.pt`` with optimiser, schedule, EMA and RNG state.

Augmentation runs batched on tensors (one affine warp per batch covers crop,
shift, scale, rotation and flip), so two CPU cores spend their time in the
network, not in per-image Python.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.core.labels import EMOTIONS
from ferkit.core.preprocess import normalize
from ferkit.errors import ConfigError, DataError
from ferkit.training.architectures import create_architecture
from ferkit.training.checkpoint import read_checkpoint
from ferkit.training.config import TrainConfig
from ferkit.training.data import FaceSet, load_faces, stratified_split
from ferkit.training.device import choose_precision, device_name, pick_device
from ferkit.training.metrics import summarize
from ferkit.training.views import tta_views


def augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """uint8 batch ``(N, 1, S, S)`` → augmented, normalised float batch."""
    n, dev = x.shape[0], x.device
    x = normalize(x.float())

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=gen, device=dev) * (hi - lo) + lo

    ang = u(-cfg.rotate, cfg.rotate) * math.pi / 180
    s = 1.0 / u(1 - cfg.scale, 1 + cfg.scale)
    flip = torch.where(torch.rand(n, generator=gen, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    theta = torch.stack([torch.stack([cos * flip, -sin, u(-cfg.shift, cfg.shift) * 2], 1),
                         torch.stack([sin * flip, cos, u(-cfg.shift, cfg.shift) * 2], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # brightness / contrast in normalised units
    mean = x.mean((1, 2, 3), keepdim=True)
    c = u(1 - cfg.contrast, 1 + cfg.contrast).view(n, 1, 1, 1)
    b = u(-cfg.brightness, cfg.brightness).view(n, 1, 1, 1) * 2
    x = (x - mean) * c + mean + b
    if cfg.erase > 0:
        size = x.shape[-1]
        area = u(0.02, 0.25) * size * size
        ratio = torch.exp(u(math.log(0.3), math.log(3.3)))
        h = (area * ratio).sqrt().clamp(1, size)
        w = (area / ratio).sqrt().clamp(1, size)
        y0 = u(0, 1) * (size - h)
        x0 = u(0, 1) * (size - w)
        ar = torch.arange(size, device=dev).float()
        my = (ar[None] >= y0[:, None]) & (ar[None] < (y0 + h)[:, None])
        mx = (ar[None] >= x0[:, None]) & (ar[None] < (x0 + w)[:, None])
        m = (my[:, :, None] & mx[:, None, :]) & (torch.rand(n, generator=gen, device=dev) < cfg.erase)[:, None, None]
        noise = torch.randn(x.shape, generator=gen, device=dev)
        x = torch.where(m[:, None], noise, x)
    return x


@torch.no_grad()
def torch_logits(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                 tta: str = "flip", device: torch.device | None = None) -> np.ndarray:
    """uint8 ``(N, S, S)`` images → logits ``(N, 7)`` of a torch model, averaged over the ``tta`` views."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    imgs = torch.as_tensor(images)
    for i in range(0, len(imgs), batch_size):
        x = normalize(imgs[i:i + batch_size, None].to(device).float()).contiguous(memory_format=torch.channels_last)
        views = tta_views(x, tta, x.shape[-1])
        out.append((sum(model(v).float() for v in views) / len(views)).cpu())
    return torch.cat(out).numpy()


class EMA:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # short warm-up so early EMA is not stale
        if not hasattr(self, "_pairs"):
            pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
            self._pairs = ([e for e, m in pairs if e.dtype.is_floating_point],
                           [m for e, m in pairs if e.dtype.is_floating_point],
                           [(e, m) for e, m in pairs if not e.dtype.is_floating_point])
        ema_f, model_f, others = self._pairs
        # one fused kernel per group instead of two per tensor: on a GPU the EMA was launch-bound
        torch._foreach_lerp_(ema_f, model_f, 1 - d)
        for e, m in others:
            e.copy_(m)


def _load_sets(cfg: TrainConfig) -> tuple[FaceSet, FaceSet]:
    data = Path(cfg.data)
    has_splits = data.is_dir() and (data / "train").is_dir()
    csv_file = data.is_file() and data.suffix.lower() == ".csv"
    train = load_faces(data, "train" if (has_splits or csv_file) else None, cfg.input_size, cfg.skip_bad)
    if cfg.val_data:
        val = load_faces(cfg.val_data, None, cfg.input_size, cfg.skip_bad)
    elif has_splits and (data / "val").is_dir():
        val = load_faces(data, "val", cfg.input_size, cfg.skip_bad)
    elif csv_file:
        val = load_faces(data, "val", cfg.input_size)
    else:
        tr, va = stratified_split(train.labels, cfg.val_fraction, cfg.seed)
        train, val = train.subset(tr), train.subset(va)
    return train, val


def _make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle" and total >= 4:
        # pct_start keeps at least two warm-up steps so very short (test) runs stay well defined
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total,
                                                   pct_start=max(0.2, 2.0 / total),
                                                   div_factor=20, final_div_factor=200)
    if cfg.schedule in ("cosine", "onecycle"):
        warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))

        def f(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        return torch.optim.lr_scheduler.LambdaLR(opt, f)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    raise ConfigError(f"unknown schedule {cfg.schedule!r}; choose onecycle, cosine or plateau")


def training_stages(ck: dict) -> list[dict]:
    """The training history behind a checkpoint, oldest first: one entry per run
    (``--init`` chains runs), each with config, epochs, best epoch, wall time and device."""
    own = {"config": ck["config"], "epochs": ck["config"]["epochs"], "best_epoch": ck.get("epoch", -1) + 1,
           "wall_time_s": round(sum(r["seconds"] for r in ck.get("history", [])), 0),
           "device": ck.get("device", "unknown"), "precision": ck.get("precision", ""),
           "teacher": ck.get("teacher")}
    return [*ck.get("parents", []), own]


def _init_state(cfg: TrainConfig, images: np.ndarray | None) -> dict:
    """Weights for ``--init``: a training checkpoint (.pt), or a shipped model name / single-model .onnx
    export rebuilt in PyTorch (its BatchNorm statistics measured on the first training images)."""
    p = Path(cfg.init)
    if p.suffix != ".pt":
        from ferkit.core.classification import resolve_model
        from ferkit.training.onnx_weights import members_from_onnx

        info = resolve_model(cfg.init)
        archs = (info.meta or {}).get("architecture", [cfg.model])
        if archs != [cfg.model]:
            raise ConfigError(f"--init {cfg.init}: is {' + '.join(archs)}, not a single {cfg.model}")
        return members_from_onnx(info.path, archs, images, cfg.input_size)[0].state_dict()
    if not p.is_file():
        raise DataError(f"--init {cfg.init}: no such checkpoint")
    ck = read_checkpoint(p)
    return ck.get("ema") or ck["model"]


def _parent_stages(init: str) -> list[dict]:
    """The training history of ``--init``'s weights: from the checkpoint, or from the export's sidecar."""
    if Path(init).suffix == ".pt":
        return training_stages(read_checkpoint(init))
    from ferkit.core.classification import resolve_model

    stages = ((resolve_model(init).meta or {}).get("training") or [[]])[0]
    return stages if isinstance(stages, list) else [stages]


def _build(cfg: TrainConfig, device: torch.device,
           images: np.ndarray | None = None) -> tuple[nn.Module, torch.optim.Optimizer, EMA | None]:
    torch.manual_seed(cfg.seed)
    model = create_architecture(cfg.model, input_size=cfg.input_size)
    if cfg.init:
        try:
            model.load_state_dict(_init_state(cfg, images))
        except RuntimeError as e:
            raise ConfigError(f"--init {cfg.init} does not fit model {cfg.model!r}: "
                              f"{str(e).splitlines()[0]}") from None
    model = model.to(device).to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    return model, opt, ema


def _kd_loss(logits: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Hinton's distillation term: KL(teacher_T ‖ student_T) · T², per-sample mean."""
    return F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean",
                    log_target=True) * t * t


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
                cfg: TrainConfig, gen: torch.Generator, weights: torch.Tensor | None, use_bf16: bool,
                step: int, tb: torch.Tensor | None = None,
                teacher: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a uint8 batch (``tb``: the teacher's cached logits for it, or ``teacher``: a
    module run on the augmented batch, when distilling); returns (summed loss, correct count) as tensors
    (no host sync)."""
    device = xb.device
    xb = augment(xb, cfg, gen).contiguous(memory_format=torch.channels_last)
    lam, yb2 = 1.0, yb
    if cfg.mixup > 0:
        lam = float(np.random.default_rng(step).beta(cfg.mixup, cfg.mixup))
        j = torch.randperm(len(xb), generator=gen, device=device) if device.type == "cuda" \
            else torch.randperm(len(xb), generator=gen)
        xb, yb2 = lam * xb + (1 - lam) * xb[j], yb[j]
        if tb is not None:  # the mixed image's teacher target: the same mixture of the two targets' logits
            tb = lam * tb + (1 - lam) * tb[j]
    if teacher is not None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            tb = teacher(xb).float()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        logits = model(xb)
    logits = logits.float()
    loss = lam * F.cross_entropy(logits, yb, weight=weights, label_smoothing=cfg.label_smoothing)
    if lam < 1:
        loss = loss + (1 - lam) * F.cross_entropy(logits, yb2, weight=weights, label_smoothing=cfg.label_smoothing)
    if tb is not None:
        loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * _kd_loss(logits, tb, cfg.kd_temperature)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach() * len(yb), (logits.argmax(1) == yb).sum()


def _fit_epochs(cfg: TrainConfig, x_train: torch.Tensor, y_train: torch.Tensor, val_images: np.ndarray,
                device: torch.device, use_bf16: bool, elapsed: float, t_net: nn.Module | None = None) -> int:
    """Largest epoch count (≤ ``cfg.epochs``) whose estimated wall time fits ``cfg.time_budget``.

    Times a few steps and one validation pass on a throw-away model, so the
    real run that follows is exactly ``--epochs N`` with the returned ``N``.
    """
    model, opt, _ = _build(replace(cfg, init=None), device)  # initial weights do not change the speed
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    warm, timed = 5, 25
    for i in range(warm + timed):
        if i == warm:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.time()
        idx = torch.randint(0, len(x_train), (cfg.batch_size,), device=x_train.device)
        _train_step(model, opt, x_train[idx], y_train[idx], cfg, gen, None, use_bf16, i, teacher=t_net)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.time() - t0) / timed
    t0 = time.time()
    torch_logits(model, val_images, device=device)
    per_epoch = per_step * max(1, len(x_train) // cfg.batch_size) * 1.05 + (time.time() - t0) + 0.5
    left = cfg.time_budget - elapsed - (time.time() - t0) - per_step * (warm + timed)
    n = max(1, min(cfg.epochs, int(left // per_epoch)))
    print(f"time budget {cfg.time_budget:.0f}s: ~{per_epoch:.1f}s per epoch -> {n} epochs", flush=True)
    return n


@dataclass
class _Run:
    """What a training run carries from step to step, and writes into every checkpoint."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    ema: EMA | None
    gen: torch.Generator
    weights: torch.Tensor | None  # per-class loss weights (--class-balance)
    meta: dict  # device, parents, precision, teacher: recorded in each checkpoint
    start_epoch: int = 0
    step: int = 0
    best: float = -1.0
    history: list[dict] = field(default_factory=list)

    def checkpoint(self, cfg: TrainConfig, epoch: int) -> dict:
        """Everything ``--resume`` needs to continue exactly where this epoch ended."""
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "ema": self.ema.model.state_dict() if self.ema is not None else None,
                "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
                "step": self.step, "best": self.best, "history": self.history, "config": asdict(cfg), **self.meta}


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Run (or resume) training. Returns the best epoch's validation summary.

    Writes ``cfg.out``/``last.pt`` every epoch, ``best.pt`` on improvement,
    ``log.csv`` (one row per epoch) and ``config.json``. With ``cfg.time_budget``
    the epoch count is first cut to what fits; ``config.json`` records the count
    used, so the run can be repeated with ``--epochs``.
    """
    t_start = time.time()
    cfg = replace(cfg)  # a budget rewrites epochs: never in the caller's object
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _prepare_device(cfg)
    train_set, val_set = _load_sets(cfg)
    # the whole uint8 set lives where the model does (86 MB for FER2013): no per-step host copies
    x_train = torch.from_numpy(train_set.images)[:, None].to(device)
    y_train = torch.from_numpy(train_set.labels).to(device)
    use_bf16, why = choose_precision(device, cfg.bf16)
    print(f"precision: {why}", flush=True)
    cfg.bf16 = use_bf16  # the recorded config says what ran, so the run repeats exactly anywhere
    t_train, kd, t_net = None, None, None
    if cfg.teacher and cfg.kd_views == "online":
        from ferkit.training.distill import online_teacher

        t_net, kd = online_teacher(cfg.teacher, train_set.images, device, cfg.threads)
    elif cfg.teacher:
        from ferkit.training.distill import teacher_logits

        logits, kd = teacher_logits(cfg.teacher, train_set.images, cfg.teacher_cache or out / "teacher.npz",
                                    cfg.kd_views, use_bf16)
        t_train = torch.from_numpy(logits).to(device)

    last = out / "last.pt"
    resuming = cfg.resume and last.exists()
    if cfg.time_budget > 0 and not resuming:
        cfg.epochs = _fit_epochs(cfg, x_train, y_train, val_set.images, device, use_bf16, time.time() - t_start,
                                 t_net)
        cfg.time_budget = 0.0  # the recorded config is the plain --epochs run it became
    run = _start(cfg, device, train_set, len(x_train))  # --init is loaded (and checked) here
    run.meta = {"device": device_name(device), "parents": _parent_stages(cfg.init) if cfg.init else [],
                "precision": why, "teacher": kd, "data_sha1": _data_fingerprint(train_set, val_set)}
    if resuming:
        _resume(run, cfg, last, device, max(1, len(x_train) // cfg.batch_size))
    elif cfg.resume:
        print(f"nothing to resume in {out}; starting fresh")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    for epoch in range(run.start_epoch, cfg.epochs):
        if cfg.max_steps and run.step >= cfg.max_steps:
            break
        row = _train_epoch(run, cfg, epoch, x_train, y_train, t_train, use_bf16, progress, t_net)
        improved = _end_epoch(run, cfg, epoch, row, val_set, device, out)
        print(f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.3f} train_acc {row['train_acc']:.3f} "
              f"val_acc {row['val_acc']:.4f} val_f1 {row['val_macro_f1']:.4f} "
              f"({row['seconds']:.0f}s){' *' if improved else ''}", flush=True)

    best_file = out / "best.pt"
    if not best_file.exists():
        raise DataError(f"{out}: training produced no checkpoint")
    return read_checkpoint(best_file)["summary"]


def _data_fingerprint(train_set: FaceSet, val_set: FaceSet) -> dict:
    """SHA-1s of the training and validation images and labels: what ``--resume`` checks the data by."""
    from ferkit.training.distill import fingerprint

    return {name: fingerprint(s.images) + fingerprint(s.labels.astype(np.int64))
            for name, s in (("train", train_set), ("val", val_set))}


def _prepare_device(cfg: TrainConfig) -> torch.device:
    """The device to train on, with its thread count or cuDNN tuning set; seeds numpy."""
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    else:
        torch.backends.cudnn.benchmark = True
    np.random.seed(cfg.seed)
    return device


def _start(cfg: TrainConfig, device: torch.device, train_set: FaceSet, n_train: int) -> _Run:
    """Model, optimiser, schedule, EMA, class weights and generator of a fresh run."""
    counts = np.bincount(train_set.labels, minlength=len(EMOTIONS))
    if (counts == 0).any():
        missing = [e for e, c in zip(EMOTIONS, counts) if c == 0]
        print(f"warning: no training images for {', '.join(missing)}")
    model, opt, ema = _build(cfg, device, train_set.images)
    sched = _make_scheduler(cfg, opt, max(1, n_train // cfg.batch_size))
    weights = None
    if cfg.class_balance > 0:
        w = np.maximum(counts, 1).astype(np.float64) ** -cfg.class_balance
        weights = torch.tensor(w / (w * counts).sum() * counts.sum(), dtype=torch.float32, device=device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    return _Run(model, opt, sched, ema, gen, weights, meta={})


def _resume(run: _Run, cfg: TrainConfig, last: Path, device: torch.device, steps_per_epoch: int) -> None:
    """Load ``last.pt`` into ``run``; ConfigError when it was trained with other essentials."""
    ck = read_checkpoint(last, device)
    saved = TrainConfig.from_dict(ck["config"])
    if cfg.time_budget > 0:  # a budgeted run resumes with the epoch count it chose
        cfg.epochs, cfg.time_budget = saved.epochs, 0.0
        run.sched = _make_scheduler(cfg, run.opt, steps_per_epoch)
    _check_same_run(last, ck, saved, cfg, run.meta)
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    if run.ema is not None and ck.get("ema"):
        run.ema.model.load_state_dict(ck["ema"])
    run.gen.set_state(ck["generator"])
    torch.set_rng_state(ck["torch_rng"])
    run.start_epoch, run.step, run.best, run.history = ck["epoch"] + 1, ck["step"], ck["best"], ck["history"]
    print(f"resuming {last} at epoch {run.start_epoch + 1}/{cfg.epochs}")


#: Options that may change when a run resumes: where and how it runs, not what it learns. The data and the
#: teacher are compared by content (their paths may differ between machines); bf16 follows the new machine.
_RESUME_MAY_CHANGE = frozenset({"data", "val_data", "teacher", "teacher_cache", "threads", "out", "resume",
                                "skip_bad", "max_steps", "time_budget", "bf16"})


def _check_same_run(last: Path, ck: dict, saved: TrainConfig, cfg: TrainConfig, meta: dict) -> None:
    """ConfigError unless ``cfg`` continues the run in ``last``: the same recipe, images and teacher file.

    A resumed run records the new command's options in every later checkpoint, so any other difference
    would leave a model whose card describes a recipe it was not trained with.
    """
    for f in fields(TrainConfig):
        if f.name not in _RESUME_MAY_CHANGE and getattr(saved, f.name) != getattr(cfg, f.name):
            raise ConfigError(f"cannot resume {last}: it was trained with {f.name}={getattr(saved, f.name)!r}, "
                              f"now {getattr(cfg, f.name)!r}; use the same options or another --out")
    if ck.get("data_sha1") and ck["data_sha1"] != meta["data_sha1"]:
        raise ConfigError(f"cannot resume {last}: --data holds other images than the run was trained on "
                          f"({meta['data_sha1']} against {ck['data_sha1']})")
    was, now = ck.get("teacher") or {}, meta.get("teacher") or {}
    if was.get("teacher_sha256") != now.get("teacher_sha256"):
        raise ConfigError(f"cannot resume {last}: it was distilled from {was.get('teacher_file') or 'no teacher'}"
                          f" (sha256 {str(was.get('teacher_sha256'))[:12]}), now from "
                          f"{now.get('teacher_file') or 'no teacher'} (sha256 {str(now.get('teacher_sha256'))[:12]})")


def _train_epoch(run: _Run, cfg: TrainConfig, epoch: int, x_train: torch.Tensor, y_train: torch.Tensor,
                 t_train: torch.Tensor | None, use_bf16: bool, progress: bool,
                 t_net: nn.Module | None = None) -> dict:
    """One pass over the shuffled training set; returns the epoch's log row (training half)."""
    from tqdm import tqdm

    device = x_train.device
    run.model.train()
    t0 = time.time()
    steps = max(1, len(x_train) // cfg.batch_size)
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
    perm = perm.to(device)
    tot_loss = torch.zeros((), device=device)
    tot_correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress,
               leave=False)
    for b in bar:
        idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        loss_sum, correct = _train_step(run.model, run.opt, x_train[idx], y_train[idx], cfg, run.gen, run.weights,
                                        use_bf16, run.step, None if t_train is None else t_train[idx], t_net)
        if cfg.schedule != "plateau":
            run.sched.step()
        run.step += 1
        if run.ema is not None:
            run.ema.update(run.model, run.step)
        tot_loss += loss_sum
        tot_correct += correct
        seen += len(idx)
        if b % 25 == 0 or b == steps - 1:  # reading the totals syncs a GPU: not every step
            bar.set_postfix(loss=f"{float(tot_loss) / seen:.3f}", acc=f"{int(tot_correct) / seen:.3f}")
        if cfg.max_steps and run.step >= cfg.max_steps:
            break
    bar.close()
    return {"epoch": epoch + 1, "lr": run.opt.param_groups[0]["lr"], "train_loss": float(tot_loss) / max(seen, 1),
            "train_acc": int(tot_correct) / max(seen, 1), "seconds": time.time() - t0}


def _end_epoch(run: _Run, cfg: TrainConfig, epoch: int, row: dict, val_set: FaceSet, device: torch.device,
               out: Path) -> bool:
    """Validate, log, and checkpoint (``best.pt`` on improvement, ``last.pt`` always); True if improved."""
    eval_model = run.ema.model if run.ema is not None else run.model
    logits = torch_logits(eval_model, val_set.images, device=device)
    val_loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_set.labels)))
    summary = summarize(val_set.labels, torch.softmax(torch.from_numpy(logits), 1).numpy(), EMOTIONS)
    if cfg.schedule == "plateau":
        run.sched.step(summary["accuracy"])
    seconds = row.pop("seconds")
    row.update({"val_loss": val_loss, "val_acc": summary["accuracy"], "val_macro_f1": summary["macro_f1"],
                "seconds": seconds})
    run.history.append(row)
    improved = summary["accuracy"] > run.best
    if improved:
        run.best = summary["accuracy"]
        torch.save({"model": eval_model.state_dict(), "config": asdict(cfg), "epoch": epoch, "summary": summary,
                    "history": run.history, **run.meta}, out / "best.pt")
    torch.save(run.checkpoint(cfg, epoch), out / "last.tmp")
    os.replace(out / "last.tmp", out / "last.pt")  # atomic: an interrupt never leaves a half-written checkpoint
    _write_log(out / "log.csv", run.history)
    _save_curves(out / "curves.png", run.history, cfg)
    return improved


def _save_curves(path: Path, history: list[dict], cfg: TrainConfig) -> None:
    """Accuracy and macro-F1 per epoch as a picture, redrawn every epoch so a run can be watched."""
    from ferkit.core.plots import save_png, timeline_image

    epochs = np.array([r["epoch"] for r in history], np.float64)
    series = {"train acc": [r["train_acc"] for r in history], "val acc": [r["val_acc"] for r in history],
              "val macro-F1": [r["val_macro_f1"] for r in history]}
    best = max(history, key=lambda r: r["val_acc"])
    title = (f"{cfg.model}, {len(history)}/{cfg.epochs} epochs: best val acc {best['val_acc']:.4f} "
             f"(epoch {best['epoch']})")
    save_png(path, timeline_image(epochs, series, title, y_label="share", x_format="{:.0f}"))


def _write_log(path: Path, history: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Model (eval mode, best/EMA weights) and config from a ``best.pt``/``last.pt`` file."""
    return model_from_checkpoint(read_checkpoint(path, device))


def model_from_checkpoint(ck: dict) -> tuple[nn.Module, TrainConfig]:
    """Model (eval mode, best/EMA weights) and config of a checkpoint already read (:func:`read_checkpoint`)."""
    cfg = TrainConfig.from_dict(ck["config"])
    model = create_architecture(cfg.model, input_size=cfg.input_size)
    state = ck.get("ema") or ck["model"]
    model.load_state_dict(state)
    return model.eval(), cfg

"""Training configuration: plain values, every one a command-line flag (torch-free to import)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ferkit.errors import ConfigError


@dataclass
class TrainConfig:
    """Every knob of a training run (CLI flags map 1:1 onto these fields)."""

    data: str = "../shared/fer2013"
    val_data: str | None = None  # folder/CSV for validation; default: data's val split, else a split of train
    val_fraction: float = 0.1  # used when there is no validation set: seeded stratified split
    model: str = "fernet_m"
    input_size: int = 48
    epochs: int = 40
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float = 0.1  # peak learning rate
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine | plateau
    warmup_epochs: float = 2.0  # cosine only
    label_smoothing: float = 0.1
    mixup: float = 0.0  # Beta(alpha, alpha); 0 disables
    class_balance: float = 0.0  # loss weight per class ∝ count^-power; 0 = plain, 0.5 = sqrt-inverse
    ema: float = 0.999  # EMA decay of weights; 0 disables
    rotate: float = 15.0  # degrees
    scale: float = 0.15  # ± relative zoom
    shift: float = 0.1  # ± fraction of the side
    brightness: float = 0.3
    contrast: float = 0.3
    erase: float = 0.5  # probability of random erasing per image
    init: str | None = None  # weights of a checkpoint (.pt), shipped model or .onnx; fresh optimiser
    teacher: str | None = None  # distil from this shipped model name or .onnx (soft targets cached once)
    kd_weight: float = 0.8  # share of the distillation term in the loss; the rest is cross-entropy on labels
    kd_temperature: float = 2.0  # softens teacher and student alike; the KD term is scaled by T²
    kd_views: str = "flip"  # teacher's views: none | flip | tencrop (members in torch) | graph (as shipped) | online
    # (online: the members run on each augmented batch; nothing is cached)
    teacher_cache: str | None = None  # where the teacher's logits are cached (default: OUT/teacher.npz)
    seed: int = 0
    bf16: bool | None = None  # bfloat16 autocast; None = only where the hardware does bf16 natively (choose_precision)
    threads: int = 0  # torch CPU threads; 0 = all cores
    out: str = "runs/fernet_m"
    resume: bool = False
    skip_bad: bool = False
    max_steps: int = 0  # stop after this many optimiser steps in total (smoke tests); 0 = no limit
    time_budget: float = 0.0  # seconds; >0: time a few steps first, then cut epochs so the run fits (0 = off)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**d)

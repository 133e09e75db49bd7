"""Every setting of ``ferkit train-detector`` (torch-free, so the CLI can list the flags without torch)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class DetectorTrainConfig:
    """Every setting of a detector run (written into ``config.json`` and every checkpoint)."""

    data: str
    out: str = "runs/detector"
    arch: str = ""                     # blazeface | retinaface ("" = retinaface with --init retinaface, else blazeface)
    init: str = ""                     # "" (from scratch) | "retinaface" (shipped weights) | a .pt checkpoint
    folds: str = ""                    # e.g. "1,2,3" (ferkit JSON / FDDB)
    val_folds: str = ""                # scored every epoch when given (AP@0.5, full-size images)
    split: str = "train"               # WIDER FACE split
    format: str = ""                   # json | wider | fddb | voc ("" = guess from the layout)
    epochs: int = 30
    batch_size: int = 8
    size: int = 384                    # training crop side (pixels)
    crop_min: float = 0.3              # smallest crop, as a fraction of the image's shorter side
    lr: float = 0.0                    # 0 = 1e-4 when fine-tuning (--init), 2e-3 from scratch
    optimizer: str = "adamw"           # adamw | sgd (momentum 0.9)
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    freeze: str = ""                   # "" | backbone | features (train only the box and class heads)
    cls_loss: str = "ce"               # ce (hard-negative mining) | focal
    neg_ratio: float = 3.0
    pos_iou: float = 0.35
    neg_iou: float = 0.35
    min_face: float = 6.0              # faces smaller than this (pixels, after the crop) are dropped
    time_budget: float = 0.0           # seconds; 0 = none
    threads: int = 1
    seed: int = 0
    width: int = 24                    # BlazeFace channel width

    @classmethod
    def from_dict(cls, d: dict) -> DetectorTrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


HELP = {
    "data": "annotations.json (or its folder), WIDER FACE root, FDDB root / ellipse list, or VOC root",
    "out": "run folder: last.pt (every epoch), best.pt (with --val-folds), log.csv, config.json",
    "arch": "blazeface (small, from scratch) or retinaface (MobileNet-0.25); default: retinaface with "
            "--init retinaface, else blazeface",
    "init": "'retinaface' = start from the shipped detector's weights; or a train-detector .pt checkpoint",
    "folds": "train on these folds only, e.g. 1,2,3 or 1-3 (annotations.json and FDDB have folds)",
    "val_folds": "score AP@0.5 on these folds after every epoch (best.pt = best of them)",
    "split": "WIDER FACE split to train on (train or val)",
    "format": "json, wider, fddb or voc (default: guessed from the layout)",
    "size": "training crop side in pixels",
    "crop_min": "smallest random square crop, as a fraction of the image's shorter side",
    "lr": "peak learning rate (0 = 1e-4 when fine-tuning, 2e-3 from scratch)",
    "freeze": "keep more than the landmark head fixed: 'backbone' (MobileNet / BlazeBlocks) or 'features' "
              "(everything but the box and class heads: the landmarks stay exactly the shipped ones)",
    "cls_loss": "ce (cross-entropy with hard-negative mining) or focal",
    "neg_ratio": "hard negatives per positive anchor (ce)",
    "pos_iou": "anchor IoU at or above which an anchor is a face",
    "neg_iou": "anchor IoU below which an anchor is background (between the two: ignored)",
    "min_face": "faces smaller than this after cropping are dropped (pixels)",
    "time_budget": "stop after this many wall-clock seconds (validation included; checkpoint written); "
                   "the cosine schedule runs on this clock",
    "threads": "torch CPU threads (1: on a shared machine a second thread mostly waits)",
    "width": "BlazeFace channel width",
}

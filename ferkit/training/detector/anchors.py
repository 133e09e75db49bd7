"""Anchor matching, offset encoding and the multibox loss (torch).

The anchors are the core decoder's (:func:`ferkit.core.detection.retinaface.priors`), so whatever
is trained here decodes with :class:`~ferkit.core.detection.retinaface.RetinaFaceDetector`.
Matching follows RetinaFace/SSD: an anchor is positive when its IoU with a face is at least
``pos_iou`` (0.35), negative under ``neg_iou`` (0.35 too by default, i.e. no ignore band), and every
face's best anchor is positive whatever its IoU (small or oddly shaped faces still get one).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ferkit.core.detection.retinaface import VARIANCE_CENTRE, VARIANCE_SIZE, priors


def anchor_boxes(height: int, width: int) -> torch.Tensor:
    """The decoder's anchors of an ``height × width`` input as ``(A, 4)`` corners ``x1, y1, x2, y2``."""
    p = torch.from_numpy(priors(height, width))
    half = p[:, 2:3] / 2
    return torch.cat([p[:, :2] - half, p[:, :2] + half], 1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of corner boxes ``(N, 4)`` × ``(M, 4)`` → ``(N, M)``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Corner boxes matched to corner anchors → the ``loc`` head's ``dx, dy, dw, dh`` targets."""
    a_c, a_s = (anchors[:, :2] + anchors[:, 2:]) / 2, (anchors[:, 2:] - anchors[:, :2])
    b_c, b_s = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    return torch.cat([(b_c - a_c) / (VARIANCE_CENTRE * a_s), torch.log(b_s / a_s) / VARIANCE_SIZE], 1)


def match(boxes: torch.Tensor, anchors: torch.Tensor, pos_iou: float = 0.35,
          neg_iou: float = 0.35) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign anchors to faces.

    boxes: ``(M, 4)`` corners; anchors: ``(A, 4)`` corners. Returns ``labels (A,)`` (1 face, 0
    background, -1 ignored: IoU between ``neg_iou`` and ``pos_iou``) and ``loc (A, 4)`` targets
    (meaningful where the label is 1).
    """
    n = anchors.shape[0]
    if boxes.numel() == 0:
        return torch.zeros(n, dtype=torch.long), torch.zeros(n, 4)
    overlap = iou(anchors, boxes)  # (A, M)
    best_iou, best_box = overlap.max(1)
    # Every face keeps its best anchor (forced to it even when another face overlaps that anchor more).
    best_anchor = overlap.argmax(0)
    best_iou[best_anchor] = 2.0
    best_box[best_anchor] = torch.arange(boxes.shape[0])
    labels = torch.full((n,), -1, dtype=torch.long)
    labels[best_iou < neg_iou] = 0
    labels[best_iou >= pos_iou] = 1
    return labels, encode(boxes[best_box], anchors)


def multibox_loss(loc: torch.Tensor, conf: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                  neg_ratio: float = 3.0, cls_loss: str = "ce", focal_gamma: float = 2.0,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth-L1 on the positives' offsets + classification, both divided by the number of positives.

    ``cls_loss="ce"``: cross-entropy on the positives and the ``neg_ratio`` × as many hardest
    negatives per image (hard-negative mining); ``"focal"``: focal loss (γ = ``focal_gamma``) on
    every non-ignored anchor. Returns ``(total, box part, class part)``.
    """
    pos = labels == 1
    n_pos = pos.sum().clamp(min=1).float()
    box = F.smooth_l1_loss(loc[pos], targets[pos], reduction="sum") / n_pos
    valid = labels >= 0
    target = labels.clamp(min=0)
    ce = F.cross_entropy(conf.reshape(-1, 2), target.reshape(-1), reduction="none").view_as(labels)
    if cls_loss == "focal":
        p_t = torch.exp(-ce)
        cls = ((1 - p_t) ** focal_gamma * ce)[valid].sum() / n_pos
    else:
        neg_ce = ce.detach().clone()
        neg_ce[~(labels == 0)] = -1.0  # positives and ignored anchors are never mined
        order = neg_ce.argsort(1, descending=True)
        rank = order.argsort(1)
        n_neg = (pos.sum(1, keepdim=True) * neg_ratio).clamp(min=1, max=labels.shape[1] - 1)
        neg = (rank < n_neg) & (labels == 0)
        cls = ce[pos | neg].sum() / n_pos
    return box + cls, box.detach(), cls.detach()


def batch_targets(boxes: list[np.ndarray], anchors: torch.Tensor, pos_iou: float = 0.35,
                  neg_iou: float = 0.35) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image corner boxes (numpy) → stacked ``labels (B, A)`` and ``loc (B, A, 4)`` targets."""
    out = [match(torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4), anchors, pos_iou, neg_iou) for b in boxes]
    return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])

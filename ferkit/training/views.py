"""Test-time views in torch, inside exported graphs and in training's own validation.

The views are defined once in :mod:`ferkit.core.preprocess` (:data:`~ferkit.core.preprocess.TTA_VIEWS`,
:func:`~ferkit.core.preprocess.tencrop_offsets`); this is their torch form, and
:func:`ferkit.core.preprocess.tta_views` their numpy form (ONNX evaluation, views run by the runtime);
a test checks they agree.
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.core.preprocess import TTA_VIEWS, tencrop_offsets
from ferkit.errors import ConfigError


def tta_views(x: torch.Tensor, tta: str, size: int = 48) -> list[torch.Tensor]:
    """Test-time views of a ``(N, 1, S, S)`` batch, as :func:`ferkit.core.preprocess.tta_views` makes them:
    the image and its mirror (``flip``), or the 4 corner and centre crops at 90 % of the side, resized
    back (bilinear), and their mirrors (``tencrop``). ``size`` is the side S, a plain int so that the
    crops are constant slices in an exported graph."""
    if tta not in TTA_VIEWS:
        raise ConfigError(f"unknown tta {tta!r}; choose none, flip or tencrop")
    if tta != "tencrop":
        return [x, torch.flip(x, dims=[3])] if tta == "flip" else [x]
    c = int(round(size * 0.9))
    views = []
    for y0, x0 in tencrop_offsets(size):
        crop = nn.functional.interpolate(x[:, :, y0:y0 + c, x0:x0 + c], size=(size, size), mode="bilinear",
                                         align_corners=False)
        views += [crop, torch.flip(crop, dims=[3])]
    return views

"""Torch definitions of the two trainable detectors, both in the RetinaFace head contract.

Both nets take ``(N, 3, H, W)`` float32 BGR minus :data:`~ferkit.core.detection.retinaface.MEAN`
and return per-anchor ``loc (N, A, 4)``, ``conf`` *logits* ``(N, A, 2)`` and ``landmarks (N, A, 10)``
over the anchors of :func:`ferkit.core.detection.retinaface.priors` (strides 8/16/32, two sizes
each). The export wrapper adds the softmax the shipped graph has, so one decoder serves all.

- :class:`RetinaFaceMNet`: RetinaFace with a MobileNetV1-0.25 backbone, laid out so that the
  shipped ONNX file's initializers load into it by name (BatchNorm is already folded into the
  convolutions there, so every convolution has a bias and there is no BatchNorm to train).
- :class:`BlazeFaceNet`: a BlazeFace-style single-shot net (5×5 depthwise "BlazeBlocks" with
  residuals, BatchNorm) for training from scratch; ~0.1 M parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ANCHORS_PER_CELL = 2
LEAK = 0.1


def _cba(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (with bias: BatchNorm folded) · placeholder for the folded BatchNorm · LeakyReLU(0.1).

    The Identity keeps the module indices of the original ``conv, bn, act`` Sequential, so the
    ONNX node ``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0`` is ``fx.stage1.1.0.0`` here.
    """
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True), nn.Identity()]
    if act:
        layers.append(nn.LeakyReLU(LEAK))
    return nn.Sequential(*layers)


def _dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_cba(cin, cin, 3, stride, groups=cin), _cba(cin, cout, 1))


class _SSH(nn.Module):
    """RetinaFace's context module: 3×3, "5×5" (two 3×3) and "7×7" (three 3×3) branches."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv3X3 = _cba(cin, cout // 2, act=False)
        self.conv5X5_1 = _cba(cin, cout // 4)
        self.conv5X5_2 = _cba(cout // 4, cout // 4, act=False)
        self.conv7X7_2 = _cba(cout // 4, cout // 4)
        self.conv7x7_3 = _cba(cout // 4, cout // 4, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.conv5X5_1(x)  # the exported graph computes this twice; once is the same value
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5), self.conv7x7_3(self.conv7X7_2(c5))], 1))


class _Heads(nn.Module):
    """One 1×1 conv per level → ``(N, A, k)`` with the anchors in :func:`priors` order."""

    def __init__(self, name: str, cin: int, k: int, levels: int = 3):
        super().__init__()
        self.k = k
        setattr(self, name, nn.ModuleList(nn.Conv2d(cin, ANCHORS_PER_CELL * k, 1) for _ in range(levels)))
        self._name = name

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        convs = getattr(self, self._name)
        out = [c(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, self.k) for c, f in zip(convs, feats)]
        return torch.cat(out, 1)


class _Body(nn.Module):
    """Shared tail: three feature maps (strides 8, 16, 32) → the three heads."""

    def heads(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.bbox_head(feats), self.class_head(feats), self.landmark_head(feats)

    def make_heads(self, cin: int) -> None:
        self.class_head = _Heads("class_head", cin, 2)
        self.bbox_head = _Heads("bbox_head", cin, 4)
        self.landmark_head = _Heads("landmark_head", cin, 10)


class RetinaFaceMNet(_Body):
    """RetinaFace, MobileNetV1-0.25 backbone, 64-channel FPN and SSH, 2 anchors per cell."""

    arch = "retinaface"

    def __init__(self):
        super().__init__()
        fx = nn.Module()
        fx.stage1 = nn.Sequential(_cba(3, 8, 3, 2), _dw(8, 16, 1), _dw(16, 32, 2), _dw(32, 32, 1),
                                  _dw(32, 64, 2), _dw(64, 64, 1))
        fx.stage2 = nn.Sequential(_dw(64, 128, 2), *[_dw(128, 128, 1) for _ in range(5)])
        fx.stage3 = nn.Sequential(_dw(128, 256, 2), _dw(256, 256, 1))
        self.fx = fx
        fpn = nn.Module()
        fpn.output1, fpn.output2, fpn.output3 = _cba(64, 64, 1), _cba(128, 64, 1), _cba(256, 64, 1)
        fpn.merge1, fpn.merge2 = _cba(64, 64), _cba(64, 64)
        self.fpn = fpn
        self.ssh1, self.ssh2, self.ssh3 = _SSH(64, 64), _SSH(64, 64), _SSH(64, 64)
        self.make_heads(64)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.fx.stage1(x)
        c2 = self.fx.stage2(c1)
        c3 = self.fx.stage3(c2)
        p1, p2, p3 = self.fpn.output1(c1), self.fpn.output2(c2), self.fpn.output3(c3)
        p2 = self.fpn.merge2(p2 + F.interpolate(p3, size=p2.shape[2:], mode="nearest"))
        p1 = self.fpn.merge1(p1 + F.interpolate(p2, size=p1.shape[2:], mode="nearest"))
        return self.heads([self.ssh1(p1), self.ssh2(p2), self.ssh3(p3)])

    def landmark_parameters(self) -> list[nn.Parameter]:
        return list(self.landmark_head.parameters())


class _BlazeBlock(nn.Module):
    """BlazeFace's block: 5×5 depthwise + 1×1 pointwise (BatchNorm), residual (max-pooled, zero-padded)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride, self.pad = stride, cout - cin
        self.dw = nn.Conv2d(cin, cin, 5, stride, 2, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.pw(self.dw(x)))
        if self.stride > 1:
            x = F.max_pool2d(x, self.stride, self.stride, ceil_mode=True)
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return F.relu(y + x)


class BlazeFaceNet(_Body):
    """BlazeFace-style detector (Bazarevsky et al. 2019) with a third, stride-32 level.

    ``width`` scales every channel count (24 by default as in the paper's front). Landmarks are
    not trained by any of the supported data formats: the landmark head starts at zero and the
    exported file says so in its metadata (``ferkit_landmarks=none``), so ferkit drops them.
    """

    arch = "blazeface"

    def __init__(self, width: int = 24):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 5, 2, 2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.s4 = nn.Sequential(_BlazeBlock(w, w), _BlazeBlock(w, w + 4, 2), _BlazeBlock(w + 4, w + 8))
        self.s8 = nn.Sequential(_BlazeBlock(w + 8, 2 * w, 2), _BlazeBlock(2 * w, 2 * w), _BlazeBlock(2 * w, 2 * w))
        self.s16 = nn.Sequential(_BlazeBlock(2 * w, 4 * w, 2), _BlazeBlock(4 * w, 4 * w), _BlazeBlock(4 * w, 4 * w))
        self.s32 = nn.Sequential(_BlazeBlock(4 * w, 4 * w, 2), _BlazeBlock(4 * w, 4 * w), _BlazeBlock(4 * w, 4 * w))
        c = 2 * w
        self.lat8, self.lat16, self.lat32 = nn.Conv2d(2 * w, c, 1), nn.Conv2d(4 * w, c, 1), nn.Conv2d(4 * w, c, 1)
        self.make_heads(c)
        nn.init.zeros_(self.landmark_head.landmark_head[0].weight)
        for conv in self.landmark_head.landmark_head:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        # Start with a low face prior (RetinaNet's trick): the first steps are not swamped by negatives.
        for conv in self.class_head.class_head:
            nn.init.normal_(conv.weight, std=0.01)
            conv.bias.data.view(ANCHORS_PER_CELL, 2)[:, 1] = -4.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8 = self.s8(self.s4(self.stem(x)))
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p32 = F.relu(self.lat32(f32))
        p16 = F.relu(self.lat16(f16) + F.interpolate(p32, size=f16.shape[2:], mode="nearest"))
        p8 = F.relu(self.lat8(f8) + F.interpolate(p16, size=f8.shape[2:], mode="nearest"))
        return self.heads([p8, p16, p32])

    def landmark_parameters(self) -> list[nn.Parameter]:
        return list(self.landmark_head.parameters())


ARCHS = {"retinaface": RetinaFaceMNet, "blazeface": BlazeFaceNet}


def build_model(arch: str, **kwargs) -> _Body:
    """A detector network of architecture ``arch`` (one of ``ARCHS``); ConfigError names the choices."""
    from ferkit.errors import ConfigError

    if arch not in ARCHS:
        raise ConfigError(f"unknown detector architecture {arch!r}; choose one of {', '.join(sorted(ARCHS))}")
    return ARCHS[arch](**kwargs)


def load_retinaface_onnx(model: RetinaFaceMNet, path: str | Path) -> RetinaFaceMNet:
    """Copy the shipped ONNX file's weights into ``model`` (every parameter, shapes checked).

    Each Conv node's output name is its module path in the exporter's model
    (``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv_output_0`` → ``fx.stage1.1.0.0``);
    weights reached through ``Identity`` nodes (a shared convolution exported twice) are followed.

    Raises:
        ferkit.errors.ModelError: the file is not this architecture.
    """
    import onnx
    from onnx import numpy_helper

    from ferkit.errors import ModelError

    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:  # onnx raises its own errors for bad files
        raise ModelError(f"{path}: cannot read ONNX file ({e})") from None
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    state = model.state_dict()
    found: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        parts = node.output[0].strip("/").split("/")[:-1]
        name = f"{parts[0]}.{parts[-1]}"
        for suffix, arg in zip(("weight", "bias"), node.input[1:3]):
            key = f"{name}.{suffix}"
            if key not in state:
                if parts[-1].endswith("_1"):  # the second copy of a shared conv (SSH's conv5X5_1)
                    continue
                raise ModelError(f"{path}: unexpected layer {key} (not the RetinaFace MobileNet-0.25 graph)")
            found[key] = inits[alias.get(arg, arg)]
    missing = sorted(set(state) - set(found))
    if missing:
        raise ModelError(f"{path}: {len(missing)} parameters missing from the ONNX file (first: {missing[0]})")
    for key, arr in found.items():
        if tuple(arr.shape) != tuple(state[key].shape):
            raise ModelError(f"{path}: {key} has shape {arr.shape}, expected {tuple(state[key].shape)}")
        state[key] = torch.from_numpy(np.array(arr, np.float32))
    model.load_state_dict(state)
    return model


class Exportable(nn.Module):
    """What goes into ONNX: the net plus the softmax the shipped graph ends with."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, conf, marks = self.net(x)
        return loc, F.softmax(conf, -1), marks

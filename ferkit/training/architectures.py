"""Emotion-classifier architectures (PyTorch), selected by name from one registry.

torchvision does not import beside the CPU torch wheel we use, so the few
architectures we need are written here. Every model takes a ``(N, 1, S, S)``
grey tensor (``S`` = ``input_size``, 48 by default, values as produced by
:func:`ferkit.core.preprocess.normalize`) and returns ``(N, 7)`` logits in the order
of :data:`ferkit.EMOTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ferkit.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a model factory to the registry under ``name``."""

    def wrap(fn: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ConfigError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_architectures() -> list[str]:
    """Names accepted by :func:`create_architecture`."""
    return sorted(_REGISTRY)


def create_architecture(name: str, num_classes: int = 7, input_size: int = 48, **kwargs) -> nn.Module:
    """Build an untrained model by registry name."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(list_architectures())}") from None
    return factory(num_classes=num_classes, input_size=input_size, **kwargs)


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3×3 convolution (no bias), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class VGG(nn.Module):
    """VGG with batch norm. ``cfg`` lists conv widths; ``"M"`` is a 2×2 max-pool.

    ``head="fc"`` is the tutorial's classifier (flatten → FC → FC → FC);
    ``head="gap"`` is global average pooling → dropout → linear, which has far
    fewer parameters and works at any input size.
    """

    def __init__(self, cfg: list, num_classes: int, input_size: int, head: str = "gap",
                 fc_width: int = 4096, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = 1, input_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                layers.append(conv_bn(cin, v))
                cin = v
        self.features = nn.Sequential(*layers)
        if head == "fc":
            if size < 1:
                raise ConfigError(f"input_size {input_size} too small for {cfg.count('M')} pools")
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(cin * size * size, fc_width), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(fc_width, num_classes),
            )
        else:
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.short = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.short = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """ResNet for small grey images: 3×3 stem without the ImageNet 7×7/max-pool,
    so a 48×48 face keeps a 6×6 map in the last stage."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: list[int], num_classes: int,
                 input_size: int, base: int = 64, dropout: float = 0.2):
        super().__init__()
        self.stem = conv_bn(1, base)
        stages: list[nn.Module] = []
        cin = base
        for i, depth in enumerate(depths):
            width = base * 2**i
            for j in range(depth):
                stride = 2 if (j == 0 and i > 0) else 1
                stages.append(block(cin, width, stride))
                cin = width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


@register("vgg16")
def vgg16(num_classes: int = 7, input_size: int = 48, **kw) -> nn.Module:
    """The tutorial's VGG16: 13 conv layers (BN) and the 4096-4096 FC head."""
    return VGG(_VGG16, num_classes, input_size, head="fc", **kw)


@register("resnet34")
def resnet34(num_classes: int = 7, input_size: int = 48, **kw) -> nn.Module:
    """The tutorial's ResNet34 (3-4-6-3 basic blocks), small-image stem."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, input_size, **kw)


@register("resnet18")
def resnet18(num_classes: int = 7, input_size: int = 48, **kw) -> nn.Module:
    """ResNet18 (2-2-2-2 basic blocks), small-image stem."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, input_size, **kw)


@register("resnet50")
def resnet50(num_classes: int = 7, input_size: int = 48, **kw) -> nn.Module:
    """ResNet50 (3-4-6-3 bottlenecks), the tutorial's to-do, small-image stem."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, input_size, **kw)


def _fernet_cfg(w: int) -> list:
    return [w, w, "M", 2 * w, 2 * w, "M", 4 * w, 4 * w, "M", 8 * w, 8 * w, "M"]


@register("fernet_s")
def fernet_s(num_classes: int = 7, input_size: int = 48, **kw) -> nn.Module:
    """Our small VGG-style net (8 conv, GAP head, ~1.2 M params): video/real-time model."""
    return VGG(_fernet_cfg(32), num_classes, input_size, head="gap", **kw)


@register("fernet_m")
def fernet_m(num_classes: int = 7, input_size: int = 48, **kw) -> nn.Module:
    """Our medium VGG-style net (10 conv, GAP head): accuracy per CPU millisecond."""
    w = 48
    cfg = [w, w, "M", 2 * w, 2 * w, "M", 4 * w, 4 * w, 4 * w, "M", 8 * w, 8 * w, 8 * w, "M"]
    return VGG(cfg, num_classes, input_size, head="gap", **kw)


@register("fernet_l")
def fernet_l(num_classes: int = 7, input_size: int = 48, **kw) -> nn.Module:
    """Our large VGG-style net (8 conv, GAP head, ~4.7 M params)."""
    return VGG(_fernet_cfg(64), num_classes, input_size, head="gap", **kw)


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())

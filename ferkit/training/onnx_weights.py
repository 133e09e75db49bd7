"""Turn an exported ferkit ONNX classifier back into trainable PyTorch modules (needs torch and onnx).

Shipped models keep only their ONNX graph: the export folds each BatchNorm into
its convolution and may store weights as float16 or int8 behind restore nodes.
:func:`members_from_onnx` rebuilds every member of such a graph (the sidecar
names their architectures) with the exported convolution and linear weights, and
gives each BatchNorm the statistics of its convolution's output measured on
``images``, with scale and shift chosen so that the module computes exactly what
the graph did, in eval mode and, to within batch noise, in train mode. Uses:
fine-tuning a shipped model (``ferkit train --init fernet-m``) and running a
shipped ensemble's members with other test-time views (cheaper teacher passes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferkit.core.preprocess import normalize
from ferkit.errors import ModelError
from ferkit.training.architectures import create_architecture


def _constants(graph) -> dict[str, np.ndarray]:
    """Initializers plus every Cast/Mul/Constant node computed from them (the weight-restore nodes)."""
    from onnx import numpy_helper

    const = {i.name: np.array(numpy_helper.to_array(i)) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            const[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type in ("Cast", "Mul") and all(i in const for i in node.input):
            a = [const[i].astype(np.float32) for i in node.input]
            const[node.output[0]] = a[0] if node.op_type == "Cast" else a[0] * a[1]
    return const


def _layers(net: nn.Module) -> tuple[list[tuple[nn.Conv2d, nn.BatchNorm2d]], nn.Linear]:
    mods = list(net.modules())
    pairs = [(m, mods[i + 1]) for i, m in enumerate(mods[:-1]) if isinstance(m, nn.Conv2d)]
    if not all(isinstance(bn, nn.BatchNorm2d) for _, bn in pairs):
        raise ModelError("only architectures with a BatchNorm after every convolution can be rebuilt from ONNX")
    linears = [m for m in mods if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ModelError("only architectures with a single linear head can be rebuilt from ONNX")
    return pairs, linears[0]


@torch.no_grad()
def _fit_batchnorm(net: nn.Module, pairs, biases: list[np.ndarray], images: np.ndarray) -> None:
    """Set each BN so that BN(conv(x)) = conv(x) + bias exactly, with running stats of conv(x) on ``images``."""
    for (_, bn), b in zip(pairs, biases):  # first BN(y) = y + b exactly, so the measuring pass is the graph's
        bn.running_mean.zero_()
        bn.running_var.fill_(1 - bn.eps)
        bn.weight.fill_(1)
        bn.bias.copy_(torch.from_numpy(b))
    stats: list[list[torch.Tensor]] = [[] for _ in pairs]
    hooks = [conv.register_forward_hook(lambda m, i, o, k=k: stats[k].append(o.transpose(0, 1).flatten(1)))
             for k, (conv, _) in enumerate(pairs)]
    net.eval()
    net(normalize(torch.from_numpy(np.ascontiguousarray(images[:256, None])).float()))
    for h in hooks:
        h.remove()
    for (_, bn), s, b in zip(pairs, stats, biases):
        y = torch.cat(s, 1).double()
        mean, var = y.mean(1), y.var(1, unbiased=False)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_((var + bn.eps).sqrt())
        bn.bias.copy_(mean + torch.from_numpy(b).double())


@torch.no_grad()
def members_from_onnx(path: str | Path, architectures: list[str], images: np.ndarray,
                      input_size: int = 48) -> list[nn.Module]:
    """PyTorch members of an exported graph (eval mode), their BatchNorms fitted on uint8 ``images`` (N, S, S).

    ``architectures``: registry names of the members, in export order (the sidecar's ``architecture``).
    A few hundred images suffice for the statistics; the output does not depend on them in eval mode.
    """
    import onnx

    graph = onnx.load(str(path)).graph
    const = _constants(graph)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    members, k = [], 0
    for j, arch in enumerate(architectures):
        net = create_architecture(arch, input_size=input_size)
        pairs, head = _layers(net)
        if k + len(pairs) > len(convs) or j >= len(gemms):
            raise ModelError(f"{path}: has fewer layers than the architectures {architectures} need")
        biases = []
        for (conv, _), node in zip(pairs, convs[k:k + len(pairs)]):
            w = const[node.input[1]]
            if w.shape != tuple(conv.weight.shape):
                raise ModelError(f"{path}: a convolution of shape {w.shape} does not fit {arch} "
                                 f"({tuple(conv.weight.shape)})")
            conv.weight.copy_(torch.from_numpy(w))
            biases.append(const[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32))
        k += len(pairs)
        g = gemms[j]
        w = const[g.input[1]]
        trans_b = any(a.name == "transB" and a.i for a in g.attribute)
        head.weight.copy_(torch.from_numpy(w if trans_b else w.T))
        head.bias.copy_(torch.from_numpy(const[g.input[2]]))
        _fit_batchnorm(net, pairs, biases, images)
        members.append(net.eval())
    if k != len(convs):
        raise ModelError(f"{path}: has {len(convs)} convolutions, the architectures {architectures} use {k}")
    return members

"""Which two test-time views are worth their cost? FER2013 val accuracy of single networks per view set.

The default runs a face's first view and, where that view is unsure, its mirror (docs/training.md). This
scores other sets of the same size (and two larger ones for scale) on the four networks inside fernet-e4
(rebuilt in PyTorch from the shipped graph: three fernet_m and one fernet_l, independently trained), so
a set is judged on networks that did not choose it. Crops are centred, resized back to 48 px (bilinear).

    python benchmarks/view_sets.py --data ../shared/fer2013
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ferkit.core.classification import resolve_model
from ferkit.core.machine import describe_cpu
from ferkit.core.preprocess import normalize
from ferkit.training.data import load_faces
from ferkit.training.onnx_weights import members_from_onnx

SETS = {
    "full": ["full"],
    "full + mirror (the default's)": ["full", "full~"],
    "crop 90 % + its mirror": ["c90", "c90~"],
    "crop 95 % + its mirror": ["c95", "c95~"],
    "crop 85 % + its mirror": ["c85", "c85~"],
    "full + mirrored crop 90 %": ["full", "c90~"],
    "full, mirror, crop 90 %, its mirror": ["full", "full~", "c90", "c90~"],
}


def crop(x: torch.Tensor, share: float) -> torch.Tensor:
    """The centred square ``share`` of each face, resized back to the input size."""
    size = x.shape[-1]
    c = int(round(size * share))
    o = (size - c) // 2
    return torch.nn.functional.interpolate(x[:, :, o:o + c, o:o + c], size=(size, size), mode="bilinear",
                                           align_corners=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/fer2013")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_cpu())
    val, train = load_faces(args.data, "val", 48), load_faces(args.data, "train", 48)
    x = normalize(torch.from_numpy(val.images[:, None]).float())
    y = torch.from_numpy(val.labels)
    views = {"full": x, "c90": crop(x, 0.90), "c95": crop(x, 0.95), "c85": crop(x, 0.85)}
    views.update({k + "~": torch.flip(v, dims=[3]) for k, v in list(views.items())})
    info = resolve_model("fernet-e4")
    archs = info.meta["architecture"]
    members = members_from_onnx(info.path, archs, train.images[:2048], 48)
    scores = {}
    for i, member in enumerate(members):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = {k: torch.cat([member(v[j:j + 512]).float() for j in range(0, len(v), 512)])
                      for k, v in views.items()}
        for name, keys in SETS.items():
            mean = torch.stack([logits[k] for k in keys]).mean(0)
            scores.setdefault(name, []).append(float((mean.argmax(1) == y).float().mean()) * 100)
        print(f"member {i} ({archs[i]}) done", flush=True)
    head = " | ".join(f"member {i} ({a})" for i, a in enumerate(archs))
    print(f"\n| views | cost (views) | {head} | mean |\n|---|---|" + "---|" * (len(archs) + 1))
    for name, keys in SETS.items():
        row = " | ".join(f"{s:.2f} %" for s in scores[name])
        print(f"| {name} | {len(keys)} | {row} | {np.mean(scores[name]):.2f} % |")


if __name__ == "__main__":
    main()

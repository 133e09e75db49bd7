"""``ferkit export-detector``: a ``train-detector`` checkpoint → ONNX in the RetinaFace head contract.

The graph has the shipped file's interface (input ``input`` ``(N, 3, H, W)`` BGR minus the mean,
any H and W; outputs ``loc``, ``conf`` (softmax included) and ``landmarks``), so
``--detector path.onnx`` decodes it with the default detector's code. The export is checked
against torch with onnxruntime on real images of the data set (or generated ones), and a model
card (``.md`` and ``.json``) is written beside it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from ferkit.core.runtime import open_session
from ferkit.errors import ModelError, OutputError
from ferkit.training.detector.loop import DetectorTrainConfig, load_detector_checkpoint, to_input
from ferkit.training.detector.models import Exportable

OPSET = 17
HEADS = ("loc", "conf", "landmarks")
#: Largest |torch − onnxruntime| accepted on any head output.
PARITY_TOLERANCE = 1e-3


def _parity_images(data: str | None, folds: str | None, n: int = 3) -> list[np.ndarray]:
    import cv2

    if data:
        from ferkit.training.detector.data import load_boxes, parse_folds

        out = []
        for s in load_boxes(data, "val", parse_folds(folds))[:n]:
            img = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
            if img is not None:
                out.append(img)
        if out:
            return out
    rng = np.random.default_rng(0)  # odd sizes too: the heads' cell counts round up
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((320, 320), (237, 301))]


def parity(model: torch.nn.Module, path: Path, images: list[np.ndarray]) -> float:
    """Max |torch − onnxruntime| over the three heads on ``images`` (each at its own size)."""
    sess = open_session(path, 1, spin=False, runtime="onnxruntime")  # the reference runtime
    worst = 0.0
    net = Exportable(model).eval()
    for img in images:
        x = to_input(img)[None]
        with torch.no_grad():
            ref = [t.numpy() for t in net(torch.from_numpy(x))]
        got = sess.run(x, list(HEADS))
        worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(ref, got)))
    return worst


def train_command(cfg: dict) -> str:
    """The ``ferkit train-detector`` command line that reproduces ``cfg`` (non-default settings only)."""
    default = {f.name: f.default for f in fields(DetectorTrainConfig) if f.name != "data"}
    parts = ["ferkit", "train-detector", "--data", shlex.quote(str(cfg["data"]))]
    for k, v in cfg.items():
        if k != "data" and k in default and v != default[k]:
            parts += [f"--{k.replace('_', '-')}", shlex.quote(str(v))]
    return " ".join(parts)


def export_detector(checkpoint: str | Path, out: str | Path, data: str | None = None, folds: str | None = None,
                    note: str = "", command: str = "") -> dict:
    """Write ``out`` (ONNX), check it against torch, and when ``data`` is given measure its AP there.

    Returns the card's facts (also written to ``out.json`` and ``out.md``).

    Raises:
        ferkit.errors.ModelError: not a detector checkpoint, or the parity check fails.
        ferkit.errors.OutputError: ``out``'s folder is missing or not writable.
    """
    model, cfg, ck = load_detector_checkpoint(checkpoint)
    out = Path(out)
    if not out.parent.is_dir():
        raise OutputError(f"{out.parent}: output folder does not exist")
    landmarks = ck.get("landmarks", "none")
    heads = {"batch": 0, "anchors": 1}
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, **{k: {v: n for n, v in heads.items()} for k in HEADS}}
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and constant-folding notes
            warnings.simplefilter("ignore")
            torch.onnx.export(Exportable(model).eval(), (torch.zeros(1, 3, 320, 320),), str(out),
                              input_names=["input"], output_names=list(HEADS), opset_version=OPSET, dynamo=False,
                              dynamic_axes=axes)
    except OSError as e:
        raise OutputError(f"{out}: cannot write ({e})") from None
    _set_metadata(out, {"ferkit_detector": cfg.arch, "ferkit_landmarks": landmarks})
    diff = parity(model, out, _parity_images(data or cfg.data, folds or cfg.val_folds or cfg.folds))
    if diff > PARITY_TOLERANCE:
        out.unlink(missing_ok=True)
        raise ModelError(f"{out}: onnxruntime differs from torch by {diff:.2e} (> {PARITY_TOLERANCE}); not written")
    facts = {
        "file": out.name, "bytes": out.stat().st_size, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "arch": cfg.arch, "init": cfg.init or "random", "landmarks": landmarks,
        "parameters": int(sum(p.numel() for p in model.parameters())), "opset": OPSET,
        "parity_max_abs_diff": diff, "checkpoint": str(checkpoint), "epochs": ck["epoch"], "steps": ck["step"],
        "train_seconds": round(ck["elapsed"], 1), "train_images": ck.get("n_train_images"),
        "data": cfg.data, "folds": cfg.folds, "config": asdict(cfg),
        "train_command": train_command(asdict(cfg)), "export_command": command, "note": note,
        "history": ck.get("history", []),
    }
    if data:
        from ferkit.training.detector.evaluate import evaluate_detector

        r = evaluate_detector(data, str(out), folds, progress=False)
        facts["evaluation"] = {"data": data, "folds": folds or "", "n_images": r["n_images"], "n_faces": r["n_faces"],
                               "ms_per_image": round(r["ms_per_image"], 2),
                               **{f"ap@{k:.1f}": round(v["ap"], 4) for k, v in r["iou"].items()},
                               "recall@0.5": round(r["iou"][0.5]["recall"], 4),
                               "fp_per_image@0.5": round(r["iou"][0.5]["fp_per_image"], 3)}
    out.with_suffix(".json").write_text(json.dumps(facts, indent=1))
    out.with_suffix(".md").write_text(model_card(facts))
    return facts


def _set_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path))
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(m, str(path))


def model_card(f: dict) -> str:
    """The Markdown model card of an exported detector, from its sidecar facts ``f``."""
    if f["landmarks"] == "none":
        lm = "not trained (no landmark labels); ferkit ignores them (metadata `ferkit_landmarks=none`)"
    elif f["config"].get("freeze") == "features":
        lm = "the shipped landmark head on the shipped features (`--freeze features`): the shipped points"
    else:
        lm = ("the shipped landmark head, frozen; the features under it were fine-tuned, so the points can "
              "move a little (check them before aligning faces with them, or train with `--freeze features`)")
    lines = [f"# {f['file']} — face detector trained with `ferkit train-detector`", "",
             "| | |", "| --- | --- |",
             f"| architecture | {f['arch']} ({f['parameters']:,} parameters), initialised from {f['init']} |",
             f"| training data | `{f['data']}`" + (f" folds {f['folds']}" if f["folds"] else "")
             + f", {f['train_images']} images |",
             f"| training | {f['epochs']} epochs, {f['steps']} steps, {f['train_seconds']} s |",
             f"| landmarks | {lm} |",
             f"| file | {f['bytes']:,} bytes, sha256 `{f['sha256']}`, ONNX opset {f['opset']} |",
             f"| parity | max abs torch − onnxruntime difference {f['parity_max_abs_diff']:.1e} "
             "over loc, conf, landmarks |",
             f"| use | `--detector {f['file']}` (RetinaFace head contract, decoded by ferkit's retinaface code) |"]
    e = f.get("evaluation")
    if e:
        lines += ["", f"## Measured on `{e['data']}`" + (f" folds {e['folds']}" if e["folds"] else ""), "",
                  "| AP@0.3 | AP@0.5 | AP@0.7 | recall@0.5 | FP/img@0.5 | ms/image |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| {e['ap@0.3']:.4f} | {e['ap@0.5']:.4f} | {e['ap@0.7']:.4f} | {e['recall@0.5']:.4f} | "
                  f"{e['fp_per_image@0.5']:.3f} | {e['ms_per_image']:.1f} |",
                  "", f"{e['n_images']} images, {e['n_faces']} faces; VOC all-point AP; recall and FP/img "
                  "at score ≥ 0.5."]
    lines += ["", "## Commands", "", "```", f["train_command"]]
    if f.get("export_command"):
        lines.append(f["export_command"])
    lines += ["```"]
    if f.get("note"):
        lines += ["", f["note"]]
    return "\n".join(lines) + "\n"

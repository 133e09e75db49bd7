"""Export trained checkpoints to ONNX, check them, and write their model cards.

``export_onnx`` writes ``NAME.onnx`` (logits out; flip test-time augmentation
baked into the graph when asked), checks parity against torch (max abs
difference of logits), measures the exported file's accuracy on a validation
set *through the same runtime the Recognizer uses*, fits a softmax
temperature there, and writes ``NAME.json`` (read by the runtime) and
``NAME.md`` (the human model card). Needs the ``train`` extra.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn

from ferkit.core.classification import EmotionClassifier, softmax, tta_in_graph, tta_mode
from ferkit.core.labels import EMOTIONS
from ferkit.core.preprocess import TTA_VIEWS
from ferkit.errors import ConfigError, ModelError
from ferkit.training.architectures import count_params
from ferkit.training.checkpoint import read_checkpoint
from ferkit.training.config import TrainConfig
from ferkit.training.data import load_faces
from ferkit.training.loop import model_from_checkpoint, training_stages
from ferkit.training.metrics import expected_calibration_error, fit_temperature, summarize
from ferkit.training.views import tta_views

OPSET = 17


_TTA_TEXT = {"none": "", "flip": " (including the mirrored view: flip TTA is inside the graph)",
             "tencrop": " (including all 10 views: ten-crop TTA, 90 % crops and their mirrors, is inside the graph)"}


def _tta_text(r: dict) -> str:
    """The model card's words for a model's test-time views, inside its graph or run by the runtime."""
    text = _TTA_TEXT[tta_mode(r)]
    if tta_in_graph(r):
        return text
    return text.replace("TTA is inside the graph", "TTA is run by ferkit's runtime around a one-view graph")


class _Ensemble(nn.Module):
    """One model, or the average of several, as a single graph.

    Each member's logits are averaged over the test-time views (``tta``: none,
    flip or tencrop); members are then combined by averaging their softmax
    probabilities, returned as log probabilities (valid logits: softmax gives
    the averaged probabilities back). A single member returns its plain
    view-averaged logits.
    """

    def __init__(self, members: list[nn.Module], tta: str = "flip", input_size: int = 48):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.tta = tta
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = tta_views(x, self.tta, self.input_size)
        # each member runs once on all views stacked into one batch: one copy of its nodes in the graph
        # rather than one per view (onnxruntime speed measured the same either way)
        batch = torch.cat(views, 0) if len(views) > 1 else x
        logits = [m(batch).reshape(len(views), -1, len(EMOTIONS)).mean(0) for m in self.members]
        if len(logits) == 1:
            return logits[0]
        return torch.log(torch.stack([torch.softmax(z, 1) for z in logits], 0).mean(0))


def to_onnx(members: list[nn.Module], out: str | Path, tta: str = "flip", input_size: int = 48) -> nn.Module:
    """Write ``members`` as one graph (see :class:`_Ensemble`) to ``out``, batch size dynamic; returns the graph."""
    net = _Ensemble(members, tta, input_size).eval()
    write_onnx(net, out, input_size)
    return net


def write_onnx(net: nn.Module, out: str | Path | BinaryIO, input_size: int = 48) -> None:
    """``net`` (1×S×S faces in, logits out) as an ONNX graph with a dynamic batch size, to a path or a file object."""
    torch.onnx.export(net, (torch.zeros(2, 1, input_size, input_size),), out if hasattr(out, "write") else str(out),
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET, dynamo=False)


def count_macs(model: nn.Module, input_size: int = 48) -> int:
    """Multiply-accumulates of one forward pass (conv + linear layers)."""
    macs = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal macs
        macs += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m: nn.Linear, inp, out):
        nonlocal macs
        macs += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(lin_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, input_size, input_size))
    for h in hooks:
        h.remove()
    return macs


def export_onnx(checkpoints: list[str | Path] | str | Path, out: str | Path, val_data: str | Path | None = None,
                tta: str = "flip", int8: bool = False, command: str = "", progress: bool = True,
                fp16_weights: bool = False, note: str = "", int8_weights: bool = False) -> dict:
    """Export one checkpoint (or an ensemble of several) to ``out`` (.onnx) and check it.

    Returns the report written to the ``.json`` sidecar.
    """
    if isinstance(checkpoints, (str, Path)):
        checkpoints = [checkpoints]
    out = Path(out)
    if out.suffix != ".onnx":
        out = out.with_suffix(".onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    members, cfgs, cks = [], [], []
    for c in checkpoints:
        ck = read_checkpoint(c)  # once: the weights, the config and the training history all come from it
        m, cfg = model_from_checkpoint(ck)
        members.append(m)
        cfgs.append(cfg)
        cks.append(ck)
    size = cfgs[0].input_size
    if any(c.input_size != size for c in cfgs):
        raise ModelError("ensemble members must share one input size")
    net = to_onnx(members, out, tta, size)  # an unknown tta raises ModelError here (tta_views)

    if fp16_weights and int8_weights:
        raise ModelError("choose one of fp16_weights and int8_weights")
    if fp16_weights or int8_weights:
        compact_initializers(out, "int8" if int8_weights else "float16")

    # Parity: torch vs onnxruntime (the reference runtime: fp32 arithmetic everywhere) on random inputs.
    clf = EmotionClassifier(out, calibrated=False, runtime="onnxruntime")
    x = torch.randn(16, 1, size, size)
    with torch.no_grad():
        ref = net(x).numpy()
    parity = float(np.abs(clf.logits(x.numpy()) - ref).max())
    print(f"parity: max |torch - onnxruntime| logits = {parity:.2e}")

    report: dict = {
        "name": out.stem,
        "file": out.name,
        "architecture": [c.model for c in cfgs],
        "input_size": size,
        "tta": tta,
        "params": sum(count_params(m) for m in members),
        "mmacs_per_face": round(sum(count_macs(m, size) for m in members) * TTA_VIEWS[tta] / 1e6, 1),
        "emotions": list(EMOTIONS),
        "temperature": 1.0,
        "parity_max_abs_diff": parity,
        "fp16_weights": fp16_weights,
        "int8_weights": int8_weights,
        "training": [training_stages(ck) for ck in cks],
        "exported": _dt.date.today().isoformat(),
        "command": command,
        "note": note,
    }
    if val_data:
        report.update(evaluate_onnx(out, val_data, progress=progress))
    (out.with_suffix(".json")).write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(model_card(report))
    if int8:
        report["int8"] = quantize_int8(out, val_data, size)
        (out.with_suffix(".json")).write_text(json.dumps(report, indent=2))
        out.with_suffix(".md").write_text(model_card(report))
    return report


def compact_initializers(path: Path, dtype: str = "float16", min_size: int = 1024) -> None:
    """Rewrite ``path`` with its large float32 weights stored smaller, each behind nodes that restore them.

    ``float16``: a Cast back to float32. ``int8``: symmetric per-output-channel
    int8 values, Cast and multiplied by their float32 scales. onnxruntime folds
    these nodes when it loads the model, so inference still runs in float32 at
    the same speed; only the file (and the repository) shrinks, 2× or 4×.
    """
    import onnx
    from onnx import numpy_helper

    if dtype not in ("float16", "int8"):
        raise ConfigError(f"unknown weight storage {dtype!r}; choose float16 or int8")
    m = onnx.load(str(path))
    restore = []
    for init in list(m.graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_size:
            continue
        arr = numpy_helper.to_array(init).astype(np.float32)
        name = init.name
        if dtype == "float16":
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), name + "_fp16"))
            restore.append(onnx.helper.make_node("Cast", [name + "_fp16"], [name], to=onnx.TensorProto.FLOAT,
                                                 name=name + "_cast"))
            continue
        scale = np.abs(arr).max(axis=tuple(range(1, arr.ndim)), keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        init.CopyFrom(numpy_helper.from_array(np.clip(np.round(arr / scale), -127, 127).astype(np.int8),
                                              name + "_int8"))
        m.graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), name + "_scale"))
        restore += [onnx.helper.make_node("Cast", [name + "_int8"], [name + "_f"], to=onnx.TensorProto.FLOAT,
                                          name=name + "_cast"),
                    onnx.helper.make_node("Mul", [name + "_f", name + "_scale"], [name], name=name + "_dequant")]
    for node in reversed(restore):
        m.graph.node.insert(0, node)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def evaluate_onnx(path: str | Path, val_data: str | Path, progress: bool = True) -> dict:
    """Accuracy/F1 of an ONNX file on a class-folder set, and a temperature fitted there (every test-time
    view on every face: the figures of the model itself, for its card)."""
    from ferkit.training.evaluation import predict_logits

    fs = load_faces(val_data, "val" if (Path(val_data) / "val").is_dir() else None, progress=progress)
    logits = predict_logits(path, fs.images, extra_views_below=1.0)
    t = fit_temperature(logits, fs.labels)
    summary = summarize(fs.labels, softmax(logits), EMOTIONS)
    return {
        "temperature": round(t, 4),
        "val": {"data": str(val_data), "n": len(fs), "accuracy": summary["accuracy"],
                "macro_f1": summary["macro_f1"],
                "recall": {k: v["recall"] for k, v in summary["per_class"].items()},
                "ece_before": expected_calibration_error(fs.labels, softmax(logits)),
                "ece_after": expected_calibration_error(fs.labels, softmax(logits, t))},
    }


def calibration_images(val_data: str | Path, n: int = 512, seed: int = 0) -> np.ndarray:
    """``n`` training faces for int8 calibration: the ``train/`` split beside ``val_data`` when there is one
    (calibrating on the images that are then scored would flatter the int8 figure), else ``val_data`` itself."""
    root = Path(val_data)
    train_dir = root.parent / "train" if root.name == "val" else root / "train"
    src, split = (train_dir.parent, "train") if train_dir.is_dir() else (root, None)
    fs = load_faces(src, split, progress=False)
    return fs.images[np.random.default_rng(seed).choice(len(fs), min(n, len(fs)), replace=False)]


def quantize_static_int8(src: Path, dst: Path, calib: np.ndarray, size: int,
                         op_types: list[str] | None = None) -> Path:
    """onnxruntime static int8 QDQ (per-channel 7-bit weights, uint8 activations) calibrated on ``calib``: uint8
    faces ``(N, S, S)``, or float32 model inputs ``(N, 1, S, S)`` (e.g. augmented ones) used as they are.

    ``reduce_range`` (weights in ±63): x86 CPUs without VNNI multiply uint8 × int8 pairs into a saturating
    int16 (``vpmaddubsw``), so full-range weights lose accuracy there and only there — the first fernet-m-q8
    scored 70.88 % on FER2013 val on a Zen 4 with VNNI and 70.13 % on an AVX2-only Zen 3. With 7-bit weights
    no pair can saturate, so every CPU computes the same integers. ``op_types`` limits quantization to those
    operators (e.g. ``["Conv", "Gemm"]``), leaving the rest in float.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from ferkit.core.preprocess import prepare_batch

    class Reader(CalibrationDataReader):
        def __init__(self):
            inputs = calib if calib.dtype == np.float32 else prepare_batch(list(calib), size)
            self.batches = iter([{"input": inputs[i:i + 32]} for i in range(0, len(inputs), 32)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=True, op_types_to_quantize=op_types)
    return dst


def quantize_int8(path: Path, val_data: str | Path | None, size: int) -> dict:
    """Static int8 (QDQ) variant calibrated on training faces; reports its val accuracy and speed."""
    from ferkit.core.preprocess import prepare_batch

    if not val_data:
        raise ModelError("int8 export needs --val-data (scoring; its train/ sibling, if any, calibrates)")
    calib = calibration_images(val_data)
    q_path = quantize_static_int8(path, path.with_name(path.stem + "-int8.onnx"), calib, size)
    res = evaluate_onnx(q_path, val_data, progress=False)
    speed = {}  # timed on calibration faces: speed does not depend on the pixels, and they are already loaded
    for name, p in (("fp32", path), ("int8", q_path)):
        clf = EmotionClassifier(p, calibrated=False, threads=1)
        x = prepare_batch(list(calib[:64]), size)
        clf.logits(x)
        t0 = time.perf_counter()
        for _ in range(5):
            clf.logits(x)
        speed[name] = round(5 * 64 / (time.perf_counter() - t0), 1)
    print(f"int8: accuracy {res['val']['accuracy']:.4f}; faces/s (1 thread, batch 64) {speed}")
    return {"file": q_path.name, "val_accuracy": res["val"]["accuracy"], "faces_per_s_1thread": speed}


def train_command(config: dict) -> str:
    """The ``ferkit train`` line that repeats a run: every option that differs from the defaults."""
    from dataclasses import fields

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    skip = {"resume", "threads", "time_budget", "max_steps", "skip_bad"}
    parts = ["ferkit train"]
    for k, v in config.items():
        if k in skip or (k in defaults and v == defaults[k] and k not in ("data", "model", "epochs")):
            continue
        flag = "--" + k.replace("_", "-")
        parts.append((flag if v else "--no-" + flag[2:]) if isinstance(v, bool) else f"{flag} {v}")
    return " ".join(parts)


def _stage_extras(t: dict) -> list[str]:
    """Model-card lines for a stage's precision and distillation teacher, where recorded."""
    c, lines = t["config"], []
    if t.get("precision"):
        lines.append(f"  Precision: {t['precision']}.")
    if c.get("teacher"):
        kd = t.get("teacher") or {}
        lines.append(f"  Distilled from `{c['teacher']}` (KD weight {c['kd_weight']}, temperature "
                     f"{c['kd_temperature']}; teacher views: {kd.get('views_detail', c.get('kd_views'))}; "
                     f"targets computed {kd.get('date', 'unknown')}, teacher sha256 "
                     f"{kd.get('teacher_sha256', '?')[:12]}).")
    return lines


def model_card(r: dict) -> str:
    """Markdown model card from an export report."""
    lines = [f"# {r['name']}", "",
             f"Emotion classifier ({' + '.join(r['architecture'])}), {r['params'] / 1e6:.2f} M parameters, "
             f"{r['mmacs_per_face']} M multiply-adds per face"
             f"{_tta_text(r)}.",
             "", f"- Input: {r['input_size']}×{r['input_size']} grey face crop, `ferkit.core.preprocess.normalize`d.",
             f"- Output: logits in the order {', '.join(r['emotions'])}; the runtime divides by the "
             f"temperature {r['temperature']} before softmax.",
             f"- ONNX opset {OPSET}; max |torch − onnxruntime| logits difference {r['parity_max_abs_diff']:.1e}"
             f"{' (weights stored as float16, computed in float32)' if r.get('fp16_weights') else ''}"
             f"{' (weights stored as int8 per output channel, computed in float32)' if r.get('int8_weights') else ''}.",
             f"- Exported {r['exported']}.", ""]
    if r.get("note"):
        lines += ["## Notes", "", r["note"], ""]
    lines += ["## Training", ""]
    for i, member in enumerate(r["training"]):
        if len(r["training"]) > 1:
            lines += [f"Member {i + 1} of {len(r['training'])}:", ""]
        for j, t in enumerate(member if isinstance(member, list) else [member]):
            c = t["config"]
            what = "fine-tuned from the run above" if j else f"`{c['model']}` on `{c['data']}`"
            lines += [f"- {what}: {t['epochs']} epochs (best epoch {t['best_epoch']}), wall time "
                      f"{t['wall_time_s'] / 60:.0f} min on {t.get('device', '2 CPU cores')}.",
                      f"  Recipe: {c['optimizer']} lr {c['lr']} {c['schedule']}, batch {c['batch_size']}, "
                      f"weight decay {c['weight_decay']}, label smoothing {c['label_smoothing']}, "
                      f"mixup {c['mixup']}, EMA {c['ema']}, rotate ±{c['rotate']}°, scale ±{c['scale']}, "
                      f"shift ±{c['shift']}, random erasing p={c['erase']}, seed {c['seed']}.",
                      *_stage_extras(t),
                      f"  Command: `{train_command(c)}`"]
        lines.append("")
    if "val" in r:
        v = r["val"]
        lines += ["", "## Validation (FER2013 PublicTest, `val/`)", "",
                  f"- Accuracy **{v['accuracy']:.2%}**, macro-F1 {v['macro_f1']:.4f} (n = {v['n']}), "
                  "at the shipped settings (this file, as the Recognizer runs it).",
                  f"- Calibration: ECE {v['ece_before']:.4f} before, {v['ece_after']:.4f} after temperature "
                  f"scaling (T = {r['temperature']}, fitted on the same set).",
                  "", "| class | recall |", "|---|---|"]
        lines += [f"| {k} | {x:.3f} |" for k, x in v["recall"].items()]
    if "int8" in r:
        q = r["int8"]
        lines += ["", "## int8 variant", "", f"`{q['file']}`: val accuracy {q['val_accuracy']:.2%}; "
                  f"faces/s on 1 thread, batch 64: {q['faces_per_s_1thread']}."]
    if r.get("command"):
        lines += ["", "## Export command", "", f"`{r['command']}`"]
    lines += ["", "Data: FER2013 (Goodfellow et al., 2013), research use. The images are not distributed here.", ""]
    return "\n".join(lines)

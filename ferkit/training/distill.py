"""Knowledge distillation: a teacher's soft targets over the training set, computed once and cached.

On a CPU the teacher (a shipped ensemble costs ~15 GMACs per face) cannot run on
every augmented batch, so its logits over the clean training images are computed
once through onnxruntime and stored beside the run with their provenance
(teacher, its file's SHA-256, the views, date, a fingerprint of the images). The
student then learns from ``kd_weight × KL(teacher_T ‖ student_T) · T²`` plus
``(1 − kd_weight) ×`` the usual cross-entropy on the hard labels (Hinton et al., 2015).

Views: the flip and ten-crop view sets are both closed under mirroring, so a
teacher that averages over them gives a mirrored face the same output as the face
itself; the cache holds one row per image and covers its mirror. The teacher runs
either as shipped (``graph``: onnxruntime) or with its members rebuilt in PyTorch
and other views (:mod:`ferkit.training.onnx_weights`), where bf16 makes a CPU pass ~2× cheaper.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ferkit.core.machine import NATIVE_INT8_FLAGS, cpu_info
from ferkit.core.runtime import available_runtimes
from ferkit.errors import DataError, ModelError

if TYPE_CHECKING:  # torch is imported where it is used: the cache helpers work without it
    import torch

    from ferkit.core.classification import ModelInfo

CACHE_VERSION = 1


def fingerprint(images: np.ndarray) -> str:
    """Short SHA-1 of a uint8 image array: ties a cache to exactly the images (and order) it was made on."""
    return hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: Views whose logits are computed once and cached; ``online`` runs the teacher on every batch instead.
CACHED_VIEWS = ("graph", "none", "flip", "tencrop")
TEACHER_VIEWS = (*CACHED_VIEWS, "online")


def _resolve_teacher(teacher: str | Path):
    """The teacher's model info; a ModelError that names the flag when it cannot be found."""
    from ferkit.core.classification import resolve_model

    try:
        return resolve_model(teacher)
    except ModelError as e:
        raise ModelError(f"--teacher: {e}") from None


def _provenance(teacher: str | Path, info: ModelInfo, views: str, detail: str,
                images: np.ndarray | None = None) -> dict:
    """What a cache or checkpoint records about its teacher (and, for a cache, the images it was made on)."""
    prov = {"version": CACHE_VERSION, "teacher": str(teacher), "teacher_file": info.path.name,
            "teacher_sha256": _file_sha256(info.path), "views": views, "views_detail": detail}
    if images is not None:
        prov.update(images=len(images), images_sha1=fingerprint(images))
    prov["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return prov


def torch_teacher(info: ModelInfo, images: np.ndarray, views: str) -> torch.nn.Module:
    """The graph's members rebuilt in PyTorch (eval mode), each averaging its logits over ``views``, then the
    members' probabilities averaged (what ``ferkit export --tta VIEWS`` of the same members would compute)."""
    from ferkit.training.export import _Ensemble
    from ferkit.training.onnx_weights import members_from_onnx

    archs = (info.meta or {}).get("architecture")
    if not archs:
        raise ModelError(f"{info.path}: its sidecar does not name the architectures; use --kd-views graph")
    return _Ensemble(members_from_onnx(info.path, archs, images, info.input_size), views, info.input_size).eval()


def _torch_logits(info: ModelInfo, images: np.ndarray, views: str, bf16: bool, batch: int = 256) -> np.ndarray:
    """Logits of :func:`torch_teacher` over uint8 ``images``, in batches."""
    import torch
    from tqdm import tqdm

    from ferkit.core.preprocess import normalize

    net = torch_teacher(info, images, views)
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in tqdm(range(0, len(images), batch), desc="teacher", unit="batch"):
            x = normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + batch, None])).float())
            out.append(net(x).float().numpy())
    return np.concatenate(out)


def compute_teacher_logits(teacher: str | Path, images: np.ndarray, views: str = "flip",
                           bf16: bool = False) -> tuple[np.ndarray, dict]:
    """Teacher logits ``(N, 7)`` over uint8 faces ``(N, S, S)`` and their provenance.

    ``views``: ``graph`` runs the exported file as shipped (onnxruntime, its own test-time views); ``none``,
    ``flip`` or ``tencrop`` rebuild its members in PyTorch and give each those views instead (a ten-crop
    ensemble costs 5× a flip pass: ~75 min against ~15 for FER2013 on 2 cores).
    """
    from ferkit.core.classification import resolve_model, tta_mode
    from ferkit.training.evaluation import predict_logits

    if views not in CACHED_VIEWS:
        raise ModelError(f"unknown teacher views {views!r}; choose {', '.join(TEACHER_VIEWS)} "
                         f"(online is never cached: training runs it on every batch)")
    info = resolve_model(teacher)
    if views == "graph":
        inside = tta_mode(info.meta or {})
        extra = "none" if inside in ("flip", "tencrop") else "flip"  # both view sets are closed under mirroring
        logits = predict_logits(info.path, images, tta=extra, progress=True)
        desc = f"the graph's own {inside} views" + ("" if extra == "none" else " and the mirror")
    else:
        logits = _torch_logits(info, images, views, bf16)
        desc = f"members rebuilt in PyTorch with {views} views{' (bf16)' if bf16 else ''}"
    return logits, _provenance(teacher, info, views, desc, images)


def online_teacher(teacher: str | Path, images: np.ndarray, device: torch.device | None = None,
                   threads: int = 0) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """(module, provenance) of a teacher that runs on every augmented batch (``--kd-views online``).

    The student's own augmented (and mixed) images go through the rebuilt members, one view each, so the
    target always belongs to the image the student sees (Beyer et al., 2022, "consistent teaching"). On a
    CPU with OpenVINO the members run there (:class:`CompiledTeacher`), on ``device`` in PyTorch otherwise.
    """
    import torch

    info = _resolve_teacher(teacher)
    net = torch_teacher(info, images[:2048], "none")  # a few thousand images fit the BatchNorm statistics
    device = torch.device("cpu") if device is None else device
    if device.type == "cpu" and "openvino" in available_runtimes():
        calib = None
        if any(f in cpu_info()[1] for f in NATIVE_INT8_FLAGS):  # int8 pays only with VNNI/AMX
            calib = _augmented_calibration(images)
        net = CompiledTeacher(net, info.input_size, threads, calib)
        how = "OpenVINO" + (f", int8 calibrated on {len(calib)} augmented training faces" if calib is not None else "")
    else:
        net, how = net.to(device).to(memory_format=torch.channels_last), "PyTorch"
    detail = f"members rebuilt in PyTorch, run by {how} on each augmented batch (one view)"
    return net, _provenance(teacher, info, "online", detail)


def _augmented_calibration(images: np.ndarray, n: int = 512) -> np.ndarray:
    """``n`` training faces as the online teacher sees them: augmented, normalised float32 ``(n, 1, S, S)``.

    Calibrated on clean faces, the int8 teacher agreed with the float one on 96.6 % of augmented faces (its
    soft targets at T = 2 off by up to 0.21); on augmented ones, 98.4 % (off by up to 0.03; bf16: 99.7 %).
    """
    import torch

    from ferkit.training.config import TrainConfig
    from ferkit.training.loop import augment

    pick = np.random.default_rng(0).choice(len(images), min(n, len(images)), replace=False)
    x = augment(torch.from_numpy(images[np.sort(pick)][:, None]), TrainConfig(), torch.Generator().manual_seed(0))
    return x.float().numpy()


class CompiledTeacher:
    """A teacher module exported to ONNX and run by OpenVINO through ferkit's one :class:`Session`.

    Inference-only, with BatchNorm folded and bf16 where the CPU has it natively: fernet-e4's four members
    take 0.20 s for a batch of 128 against 0.42 s in eager PyTorch with bf16 autocast, and a fernet_m
    distillation step 0.57 s against 0.80 (0.38 without a teacher; 2-core AMX Xeon,
    ``python benchmarks/bench_training.py --teacher``). With ``calib`` (faces, as
    :func:`~ferkit.training.export.quantize_static_int8` takes them) the members are first quantized to static
    int8 (convolutions and classifier only): on a 2-core Zen 4 with VNNI but no AMX a distillation step then takes
    1.22–1.40 s against 1.55 in bf16; calibrated on augmented faces, their soft targets (T = 2) stay within 0.03
    of the float teacher's. Called like the module: float ``(N, 1, S, S)`` in, logits out.
    """

    def __init__(self, net: torch.nn.Module, input_size: int, threads: int = 0, calib: np.ndarray | None = None):
        import tempfile

        from ferkit.core.runtime import open_session
        from ferkit.training.export import quantize_static_int8, write_onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "teacher.onnx"
            write_onnx(net.float().eval(), path, input_size)
            if calib is not None:
                # the convolutions and the classifier only: an ensemble's mean probability quantized to
                # uint8 reaches 0, whose log (-inf) would turn the distillation loss into NaN
                path = quantize_static_int8(path, Path(tmp) / "teacher-int8.onnx", calib, input_size,
                                            op_types=["Conv", "Gemm", "MatMul"])
            self.session = open_session(path.read_bytes(), threads=threads or None, runtime="openvino")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.session.run(x.float().contiguous().numpy())[0])


def save_cache(path: str | Path, logits: np.ndarray, prov: dict) -> Path:
    """Write logits and provenance as one ``.npz`` (a few hundred KB for FER2013)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, logits=logits.astype(np.float32), provenance=np.array(json.dumps(prov)))
    tmp.replace(path)
    return path


def load_cache(path: str | Path) -> tuple[np.ndarray, dict]:
    """(logits, provenance) from a cache written by :func:`save_cache`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["logits"], json.loads(str(z["provenance"]))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a ferkit teacher cache ({e})") from None


def teacher_logits(teacher: str | Path, images: np.ndarray, cache: str | Path, views: str = "flip",
                   bf16: bool = False) -> tuple[np.ndarray, dict]:
    """Cached teacher logits for ``images``: reused when the cache matches teacher and images, else recomputed.

    A cache made by another teacher file or on other images is never used silently: it is rebuilt.
    """
    cache = Path(cache)
    info = _resolve_teacher(teacher)
    if cache.is_file():
        logits, prov = load_cache(cache)
        if (prov.get("images_sha1") == fingerprint(images) and prov.get("teacher_sha256") == _file_sha256(info.path)
                and prov.get("views") == views and logits.shape == (len(images), 7)):
            print(f"teacher targets: {cache} ({prov['teacher']}, {prov['views']}, {prov['date']})", flush=True)
            return logits, prov
        print(f"teacher cache {cache} was made for another teacher or other images: recomputing", flush=True)
    print(f"teacher targets: running {teacher} over {len(images)} training images (once; cached in {cache})",
          flush=True)
    logits, prov = compute_teacher_logits(teacher, images, views, bf16)
    save_cache(cache, logits, prov)
    return logits, prov

"""Reading ``.pt`` checkpoints safely: tensors and plain values only.

A ``.pt`` file is a pickle, and a pickle can run any code while it loads. Checkpoints travel (from a
lent GPU, from a colleague, from a download), so every checkpoint ferkit reads goes through
:func:`read_checkpoint`, which uses PyTorch's weights-only unpickler: ferkit's own checkpoints hold
nothing else (state dicts, the config as a dict, numbers, strings, lists), and a file that does is
refused before any of it runs.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ferkit.errors import ModelError

#: numpy scalars (a metric saved as ``np.float64``) are values too: rebuilt from their dtype and bytes, no code runs.
_NUMPY_VALUES = [np._core.multiarray.scalar, np.dtype, *(type(np.dtype(t)) for t in
                 ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"))]


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu", what: str = "checkpoint") -> dict:
    """The checkpoint at ``path`` as a dict with ``model`` and ``config`` (tensors on ``device``).

    Raises:
        ferkit.errors.ModelError: missing, not a checkpoint, not ferkit's, or holding Python objects other
            than tensors and plain values (which could run code when loaded).
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: {what} not found")
    try:
        ck = _load_weights_only(p, device)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found is None:  # the weights-only unpickler's word for "not a pickle at all"
            raise ModelError(f"{p}: not a {what} (not a PyTorch file)") from None
        raise ModelError(f"{p}: refused: it holds Python objects other than tensors and plain values "
                         f"({found.group(1)}), which could run code when loaded; ferkit reads only checkpoints "
                         "that `ferkit train` wrote") from None
    except Exception as e:  # torch raises assorted errors for truncated or foreign files
        raise ModelError(f"{p}: not a {what} ({e.__class__.__name__})") from None
    if not isinstance(ck, dict) or "model" not in ck or "config" not in ck:
        raise ModelError(f"{p}: not a ferkit {what}")
    return ck


def _load_weights_only(path: Path, device: str | torch.device) -> object:
    """``torch.load`` with the weights-only unpickler (tensors, plain values, numpy scalars): no code runs."""
    with torch.serialization.safe_globals(_NUMPY_VALUES):
        return torch.load(path, map_location=device, weights_only=True)


#: What a run folder holds besides its checkpoints that a resumed run needs or extends.
_RUN_TEXT_FILES = ("config.json", "log.csv")


def pack_run(run_dir: str | Path, dest: str | Path, best: bool = True) -> Path:
    """One file holding what ``--resume`` needs of ``run_dir``, at about half the size: for carrying a run that
    outlasts one machine (a CPU run over several sessions, a run moved between machines).

    ``last.pt`` and ``best.pt`` go in with their float32 weights, EMA weights and SGD momentum stored as
    16-bit floats (weights float16, momentum bfloat16 for its range), the run's ``config.json`` and
    ``log.csv`` as text. :func:`unpack_run` restores float32: the weights then differ from the originals by
    at most one float16 rounding (relative 5e-4), far below one SGD step's change at any useful learning rate.
    ``best=False`` leaves ``best.pt`` out (a third smaller): for a run carried in mid-schedule, whose best
    epoch is still to come (``log.csv`` keeps every epoch's scores); the resumed run then keeps the best of
    its own epochs as ``best.pt``.

    Raises:
        ferkit.errors.ModelError: ``run_dir`` holds no ``last.pt`` (or a file that is not a ferkit checkpoint).
    """
    run_dir, dest = Path(run_dir), Path(dest)
    last = _map_tensors(read_checkpoint(run_dir / "last.pt"), _to_16bit)
    packed: dict = {"format": "ferkit-run-pack-1", "last": last}
    if best and (run_dir / "best.pt").is_file():
        packed["best"] = _map_tensors(read_checkpoint(run_dir / "best.pt"), _to_16bit)
    else:
        packed["last"]["best"] = -1.0  # no best.pt to beat: the first resumed epoch writes one
    packed["files"] = {n: (run_dir / n).read_text() for n in _RUN_TEXT_FILES if (run_dir / n).is_file()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    torch.save(packed, tmp)
    tmp.replace(dest)
    return dest


def unpack_run(src: str | Path, run_dir: str | Path) -> Path:
    """Write the run packed by :func:`pack_run` into ``run_dir`` (``last.pt``, ``best.pt``, ``config.json``,
    ``log.csv``), ready for ``ferkit train ... --out run_dir --resume``.

    Raises:
        ferkit.errors.ModelError: ``src`` is not a packed run, or ``run_dir`` already holds a ``last.pt``
            (unpacking never overwrites a run).
    """
    src, run_dir = Path(src), Path(run_dir)
    if (run_dir / "last.pt").exists():
        raise ModelError(f"{run_dir}: already holds a run (last.pt); unpack into an empty folder")
    try:
        packed = _load_weights_only(src, "cpu")
    except Exception as e:  # missing, truncated, foreign or refused: all the same to the user
        raise ModelError(f"{src}: not a packed ferkit run ({e.__class__.__name__})") from None
    if not isinstance(packed, dict) or packed.get("format") != "ferkit-run-pack-1":
        raise ModelError(f"{src}: not a packed ferkit run (scripts/carry_run.py pack writes them)")
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in packed["files"].items():
        (run_dir / Path(name).name).write_text(text)
    if "best" in packed:
        torch.save(_map_tensors(packed["best"], _to_32bit), run_dir / "best.pt")
    # last.pt written last: a half-unpacked run is then not resumable.
    torch.save(_map_tensors(packed["last"], _to_32bit), run_dir / "last.pt")
    return run_dir


def _map_tensors(value: object, fn: Callable[[torch.Tensor, bool], torch.Tensor], in_optimizer: bool = False) -> object:
    """Apply ``fn(tensor, in_optimizer)`` to every tensor of a nested checkpoint dict, keeping its structure."""
    if isinstance(value, torch.Tensor):
        return fn(value, in_optimizer)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn, in_optimizer or k == "optimizer") for k, v in value.items()}
    if isinstance(value, list):
        return [_map_tensors(v, fn, in_optimizer) for v in value]
    return value


def _to_16bit(tensor: torch.Tensor, in_optimizer: bool) -> torch.Tensor:
    """float32 → float16; bfloat16 under ``optimizer``, whose momentum may underflow float16."""
    if tensor.dtype != torch.float32:
        return tensor
    return tensor.to(torch.bfloat16 if in_optimizer else torch.float16)


def _to_32bit(tensor: torch.Tensor, in_optimizer: bool) -> torch.Tensor:
    """The inverse of :func:`_to_16bit` (ferkit trains nothing in 16 bits, so every 16-bit tensor was float32)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor

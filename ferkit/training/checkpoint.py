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
        with torch.serialization.safe_globals(_NUMPY_VALUES):
            ck = torch.load(p, map_location=device, weights_only=True)
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

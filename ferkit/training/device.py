"""Where a training run goes and in which precision: the device, bf16 where the hardware has it natively."""

from __future__ import annotations

import torch

from ferkit.core.machine import NATIVE_BF16_FLAGS, cpu_info


def pick_device() -> torch.device:
    """CUDA where available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def choose_precision(device: torch.device, requested: bool | None,
                     flags: set[str] | None = None) -> tuple[bool, str]:
    """(use bf16 autocast, why) for a run: ``requested`` True/False forces it; None picks bf16 only where native.

    ``flags``: the CPU's feature flags (default: read from the machine; tests pass their own).
    """
    if requested is not None:
        return requested, f"{'bf16' if requested else 'fp32'} forced by --{'' if requested else 'no-'}bf16"
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "bf16: the GPU supports it natively" if ok else "fp32: this GPU has no native bf16"
    flags = cpu_info()[1] if flags is None else flags
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if native and torch.backends.mkldnn.is_available():
        return True, f"bf16: the CPU has native bf16 ({', '.join(native)})"
    return False, "fp32: the CPU has no native bf16 (no avx512_bf16/amx_bf16), where bf16 autocast is emulated"


def device_name(device: torch.device) -> str:
    """What a run trained on, for logs and model cards."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads, {cpu_info()[0]})"

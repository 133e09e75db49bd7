"""What machine this is: CPU model and feature flags (torch-free), for precision choices and for
stating the machine beside every speed figure."""

from __future__ import annotations

from pathlib import Path

# CPU flags that mean bf16 matrix arithmetic in hardware; elsewhere oneDNN emulates bf16 and autocast is
# ~15× slower than fp32 (measured on an AVX2-only EPYC: 10.5 vs 0.70 s per fernet_s batch of 128)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_info() -> tuple[str, set[str]]:
    """(CPU model name, feature flags) from ``/proc/cpuinfo``; ("unknown", {}) where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown", set()
    name, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name == "unknown":
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return name, flags

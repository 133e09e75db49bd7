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


def describe_cpu() -> str:
    """One line for a benchmark's header: model name, family/model and the vector flags speed depends on."""
    name, flags = cpu_info()
    ids = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("cpu family", "model") and key.strip() not in ids:
                ids[key.strip()] = value.strip()
    except OSError:
        pass
    vector = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    family = f", family {ids['cpu family']} model {ids['model']}" if len(ids) == 2 else ""
    return f"{name}{family}; {' '.join(vector) or 'no AVX2'}"

"""What machine this is: CPU model and feature flags (torch-free), for precision choices and for
stating the machine beside every speed figure."""

from __future__ import annotations

import os
from pathlib import Path

# CPU flags that mean bf16 matrix arithmetic in hardware; elsewhere oneDNN emulates bf16 and autocast is
# ~15× slower than fp32 (measured on an AVX2-only EPYC: 10.5 vs 0.70 s per fernet_s batch of 128)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# CPU flags that mean int8 dot products in one instruction (VNNI, AMX); without them int8 gains little over bf16/fp32
NATIVE_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _cpuinfo() -> dict[str, str]:
    """The first value of each key of ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_info(fields: dict[str, str] | None = None) -> tuple[str, set[str]]:
    """(CPU model name, feature flags) from ``/proc/cpuinfo`` (or its already parsed ``fields``);
    ("unknown", {}) where it cannot be read."""
    fields = _cpuinfo() if fields is None else fields
    return fields.get("model name") or "unknown", set((fields.get("flags") or fields.get("Features") or "").split())


def describe_cpu() -> str:
    """One line for a benchmark's header: model name, family/model and the vector flags speed depends on."""
    fields = _cpuinfo()
    name, flags = cpu_info(fields)
    vector = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
              if f in flags]
    family = (f", family {fields['cpu family']} model {fields['model']}"
              if fields.get("cpu family") and fields.get("model") else "")
    return f"{name}{family}; {' '.join(vector) or 'no AVX2'}"


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, e.g. a container's
    ``--cpuset-cpus``; else every CPU), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1

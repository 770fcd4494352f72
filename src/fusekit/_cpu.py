"""What the host CPU can do, read without importing Numba (only llvmlite, which is light)."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuFeatures:
    """The host CPU as LLVM sees it, and its vector extensions."""

    llvm_name: str
    llvm_features: str
    flags: frozenset[str]

    @property
    def vector_extensions(self) -> list[str]:
        """AVX / AVX-512 / AMX extensions present, in a stable order."""
        return sorted(f for f in self.flags if f.startswith(("avx", "amx", "fma")))


@functools.cache
def cpu_features() -> CpuFeatures:
    """Probe the host CPU once. Falls back to /proc/cpuinfo when llvmlite is missing."""
    flags: set[str] = set()
    name, features = "unknown", ""
    try:
        import llvmlite.binding as ll

        name = ll.get_host_cpu_name()
        feats = ll.get_host_cpu_features()
        features = feats.flatten()
        flags = {k for k, v in feats.items() if v}
    except Exception:
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("flags"):
                        flags = set(line.split(":", 1)[1].split())
                        break
        except OSError:
            pass
    return CpuFeatures(name, features, frozenset(flags))

"""What the host CPU can do, read without importing Numba (only llvmlite, which is light)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path


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


@functools.cache
def last_level_cache_bytes(default: int = 8 << 20) -> int:
    """CPU 0's level-3 cache in bytes (Linux sysfs, read once), else ``default``."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "3":
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
        except (OSError, ValueError):
            break
    return default

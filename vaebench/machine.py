"""What this machine offers a run, asked without importing torch: the main process of a sweep (its worker count,
its grid check, a resume's skip) stays torch-free, and torch's import (~1.3 s here) is paid only by the
processes that train."""

from __future__ import annotations

import os
from typing import Optional

# Device nodes of the GPU drivers torch can use: NVIDIA's control device, WSL2's GPU bridge, ROCm's. Where none is
# present torch cannot see a GPU; where one is, only torch can tell.
GPU_NODES = ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def available_cpus() -> int:
    """The CPUs this process may run on (SLURM, taskset and cgroup cpusets narrow it), not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def device_type_without_torch(device: str) -> Optional[str]:
    """cpu or cuda where that is certain without importing torch; None where only torch can tell."""
    if device == "cpu":
        return "cpu"
    if device == "auto" and not any(os.path.exists(node) for node in GPU_NODES):
        return "cpu"
    return None

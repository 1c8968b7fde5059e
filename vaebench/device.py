"""Where a run computes and what memory it uses: device choice (one GPU slot per sweep worker), peak memory,
freeing memory between jobs, glibc heap tuning on CPU, telling an out-of-memory failure from other failures and
a fatal device error (one that breaks the worker's CUDA context) from a run's own failure."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import platform
import resource
import socket
import sys
from pathlib import Path
from typing import Optional

# cuBLAS reads this when it creates its handle (a process's first matrix product on a GPU): with it cuBLAS
# uses fixed workspaces and so gives the same bits run after run (PyTorch's reproducibility notes). Set at
# import, before anything touches CUDA; a value already in the environment wins.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

from vaebench.claim import gpu_slot  # noqa: E402
from vaebench.errors import UserError  # noqa: E402

log = logging.getLogger(__name__)

# jobs_per_gpu=null: one VAE job keeps a large GPU only partly busy (a ~1 ms step of small kernels) and uses
# about 1 GB (issue 15's estimate for an H200, not yet measured here: BENCHMARKS.md, "GPU path"), so several
# share a GPU: as many as GPU_MEMORY_PER_JOB fits, at most MAX_JOBS_PER_GPU. An oom while sharing is retried
# on resume, so a guess too high costs a rerun, never a wrong result.
GPU_MEMORY_PER_JOB = 8 * 2**30
MAX_JOBS_PER_GPU = 4


def device_type(name: str) -> str:
    """cpu or cuda: where a run with device=`name` trains on this machine (its identity in config_hash)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name.split(":")[0]


def jobs_per_gpu(setting: Optional[int]) -> int:
    """Jobs that share one GPU: the setting, or as many as GPU_MEMORY_PER_JOB fits on the smallest GPU (<= 4)."""
    if setting:
        return setting
    if not torch.cuda.is_available():
        return 1
    smallest = min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    return max(1, min(MAX_JOBS_PER_GPU, smallest // GPU_MEMORY_PER_JOB))


def gpu_names() -> list[str]:
    """A name per visible GPU, unique across the hosts sharing a sweep directory: host and physical id (the
    entry of CUDA_VISIBLE_DEVICES: each SLURM job may see its own GPU as cuda:0)."""
    n = torch.cuda.device_count()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    physical = visible[:n] if len(visible) >= n else [str(i) for i in range(n)]
    return [f"{socket.gethostname()}-gpu{p}" for p in physical]


def check_device(name: str) -> None:
    """UserError (a config error, exit 2) for CUDA asked for without CUDA, or cuda:N past the device count."""
    if device_type(name) == "cpu":
        return
    if not torch.cuda.is_available():
        raise UserError(f"config key 'device': {name} asked for, but CUDA is not available; use device=auto")
    count = torch.cuda.device_count()
    if ":" in name and int(name.split(":")[1]) >= count:
        raise UserError(f"config key 'device': {name} asked for, but this machine has {count} GPU(s) "
                        f"(cuda:0 ... cuda:{count - 1}); use device=cuda or a smaller index")


def pick_device(name: str, slot_dir: Optional[Path] = None, per_gpu: Optional[int] = None) -> torch.device:
    """The device a job trains on. On CUDA (auto with a GPU, cuda, cuda:N) a sweep worker (slot_dir: the sweep
    directory) claims one GPU slot for its life and keeps that GPU (cuda:N: a slot of GPU N); a single run
    takes GPU 0 or N. Raises UserError for CUDA without CUDA and for cuda:N past the device count."""
    if device_type(name) == "cpu":
        return torch.device("cpu")
    check_device(name)
    candidates = [int(name.split(":")[1])] if ":" in name else list(range(torch.cuda.device_count()))
    index = candidates[0]
    if slot_dir is not None:
        names = gpu_names()
        index = candidates[gpu_slot(slot_dir, [names[i] for i in candidates], jobs_per_gpu(per_gpu)).index]
    torch.cuda.set_device(index)  # the worker's every CUDA call goes here: no context on another GPU
    return torch.device("cuda", index)


def deterministic_cuda() -> None:
    """Same seed, same GPU, same bits: deterministic algorithms (warn_only: an op without a deterministic
    kernel warns in run.log instead of failing the run), cuDNN without autotuning. Called before the job's first
    CUDA work. Not on CPU, where the default path is already deterministic and these would change nothing but
    the cost (fill_uninitialized_memory fills every new tensor; off, as nothing reads memory unwritten)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def device_name(device: torch.device) -> Optional[str]:
    """The GPU's model, or the CPU's (for result.json)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def cpu_has_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX-512 or newer; AVX512-BF16 and AMX make them native).
    Without them torch emulates bf16 matrix products: ~230x slower than float32 on an AVX2 AMD EPYC, which made
    trainer.amp's epochs 36x slower there (BENCHMARKS.md, "Opt-in trainer settings"). True where torch cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


_retained = False


def retain_freed_memory() -> None:
    """Keep memory that training frees inside the process, for the next step to reuse (glibc, CPU).

    glibc hands large freed blocks straight back to the kernel (blocks over its mmap threshold, and the
    top of the heap beyond its trim threshold), so each step faulted its big activations and gradients
    back in as fresh zeroed pages: about 40 MB a step for the VAE and 0.9 GB for IWAE's [B, 5, F]
    tensors at batch 1000. With mmap off for malloc and no trimming they come from the heap, faulted in
    once. Once per process; fit() trims the heap at its end (release_heap), so the next job in a sweep
    worker starts from a small footprint and measures its own peak. Numbers do not change.
    """
    global _retained
    if _retained or not sys.platform.startswith("linux"):
        return
    _retained = True
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 2**30)
    except (OSError, AttributeError):  # not glibc (musl): nothing to tune
        pass


def release_heap() -> None:
    """Give the process's free heap memory back to the kernel (glibc malloc_trim)."""
    if not _retained:
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


# Allocation failures inside CUDA's libraries surface as a RuntimeError with the library's status name, not as
# torch.OutOfMemoryError: cuBLAS's handle or workspace (CUBLAS_STATUS_ALLOC_FAILED), cuDNN's, cuSOLVER's, cuFFT's.
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                 "CUSOLVER_STATUS_ALLOC_FAILED", "CUFFT_ALLOC_FAILED", "cudaErrorMemoryAllocation")


def is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(s in text for s in OUT_OF_MEMORY)


# CUDA errors that leave the process's CUDA context unusable ("sticky"): every later CUDA call of the process
# fails with them, so the worker can run no further job.
FATAL = ("illegal memory access", "device-side assert", "unspecified launch failure", "illegal instruction",
         "misaligned address", "uncorrectable ECC error", "launch timed out", "hardware stack error",
         "CUDA_ERROR_ILLEGAL_ADDRESS", "CUDA_ERROR_LAUNCH_FAILED")

_broken: Optional[str] = None  # in a worker whose device failed fatally: the device and the error, in words


class DeviceFailed(Exception):
    """A job handed to a worker whose device failed earlier: it is not run, and writes nothing."""


def is_fatal(e: BaseException, device: torch.device) -> bool:
    """e broke the device: a sticky CUDA error by its message, or a GPU that no longer synchronises."""
    if any(s in str(e) for s in FATAL):
        return True
    if device.type != "cuda":
        return False
    try:
        torch.cuda.synchronize(device)
    except Exception:  # noqa: BLE001 - whatever it raises, the context is gone
        return True
    return False


def mark_broken(device: torch.device, name: Optional[str], error: str) -> str:
    """Remember, for the rest of this process, that its device failed; the words naming it."""
    global _broken
    _broken = f"{device} ({name or 'unknown device'}) on {socket.gethostname()} failed: {error}"
    return _broken


def broken() -> Optional[str]:
    return _broken


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: "5" resets the process's peak resident set size (VmHWM)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_memory_mb(device: torch.device) -> tuple[Optional[float], str]:
    if device.type == "cuda":
        try:  # the allocator's own count: no CUDA call, but never let a broken device cost the result
            return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
        except Exception:  # noqa: BLE001
            return None, "cuda_max_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "peak_rss"
    except OSError:
        pass
    return max_rss_mb(), "peak_rss_process"


def max_rss_mb() -> float:
    """The process's peak RSS from getrusage: ru_maxrss is in kilobytes on Linux and the BSDs, in bytes on macOS."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def release_memory(device: torch.device) -> None:
    """After a job: free what it held, so the next job in this worker starts small and measures its own peak
    (on CPU the trim also returns what the latent scores freed after fit's own trim). Never raises: on a
    device that failed fatally empty_cache() raises the same error again, after the result is written."""
    try:
        gc.collect()
        if device.type != "cuda":
            release_heap()
        elif _broken is None:
            torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001
        log.warning("could not free the job's memory on %s: %s: %s", device, type(e).__name__, e)



"""Start-up: the commands a user types before any training, `vaebench --help`, `--cfg job` and a misspelt key,
`vaebench-aggregate --help` and `vaebench-embed --help`, each a fresh process as the user runs it. Target under a
second on an idle machine (issue 22); the CPU time of the process (user + sys, its children included) is the figure
other processes' load hardly moves."""

from __future__ import annotations

import resource
import subprocess
import sys
import time

from common import REPO, Context, median, secs, vaebench_exe

# (label, command, arguments, exit status)
COMMANDS = (("--help", "vaebench", ["--help"], 0), ("--cfg job", "vaebench", ["--cfg", "job"], 0),
            ("a misspelt key", "vaebench", ["latnt_dim=5"], 2), ("--help", "vaebench-aggregate", ["--help"], 0),
            ("--help", "vaebench-embed", ["--help"], 0))


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh_processes(argv: list[str], repeats: int, status: int = 0) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (user + sys, its children included) of `repeats` fresh runs of argv."""
    walls, cpus = [], []
    for _ in range(repeats):
        cpu_before, started = cpu_of_children(), time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
        walls.append(time.perf_counter() - started)
        cpus.append(cpu_of_children() - cpu_before)
        if proc.returncode != status:
            raise SystemExit(f"bench: {' '.join(argv)} exited {proc.returncode}, expected {status}: "
                             f"{proc.stderr[-1000:]}")
    return walls, cpus


def startup(ctx: Context, repeats: int = 5) -> None:
    for label, command, args, status in COMMANDS:
        walls, cpus = fresh_processes([vaebench_exe(command), *args], repeats, status)
        wall, cpu = median(walls), median(cpus)
        ctx.table.add("startup", f"{command} {' '.join(args)} ({label})", secs(wall), target="< 1 s", met=wall < 1.0,
                      note=f"CPU time {secs(cpu)}; median of {repeats} fresh processes")
        ctx.raw.setdefault("startup", {})[f"{command} {label}"] = {"wall": walls, "cpu": cpus}
    import_floor(ctx, repeats)


def import_floor(ctx: Context, repeats: int) -> None:
    """What every process that trains pays before its first step, whatever vaebench does: a fresh Python importing
    the training loop (torch, and torch._dynamo, which torch.optim's optimizers import on their first step). A sweep
    cannot show its first epoch sooner than this after its first worker starts (issue 23's 3 s target)."""
    walls, cpus = fresh_processes([sys.executable, "-c", "import vaebench.task"], repeats)
    ctx.table.add("startup", "floor: a fresh Python importing the training loop (torch, torch._dynamo)",
                  secs(median(walls)), note=f"CPU time {secs(median(cpus))}; median of {repeats} fresh processes; "
                  "every training process (a single run, each sweep worker) pays it before its first step")
    ctx.raw.setdefault("startup", {})["import floor"] = {"wall": walls, "cpu": cpus}

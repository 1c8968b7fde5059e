"""A sweep at TCGA-11's shape under the default objective: how much of the workers' time goes into training
epochs, how long until the first epoch, and where the rest goes (each job's `timing`, vaebench.task); and the
small-data epoch against its floor.

TCGA-11 (docs/study-tcga11.md): 1,204 samples of 11 cohorts x 3,341 genes, 1,084 training and 120 validation rows;
here the built-in synthetic matrix of that shape. The sweep is the study's grid in small: 4 models x adam, rmsprop
x lr 1e-3, 1e-2 at latent 20 = 16 jobs, batch 100 (11 steps an epoch) and patience, as study_tcga11_calibrated
runs them (at most 50 epochs, EPOCHS below), on 2 worker processes of one torch thread each.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from common import BENCH_DIR, REPO, Context, compose_config, load, median, secs, vaebench_exe
from epochs import paired

TCGA11 = (1204, 3341, 11)  # samples, genes, cohorts
BATCH = 100
WORKERS = 2
# At most 50 epochs a run (patience 10 may stop it sooner): the low end of the 50-100 epochs that runs train under
# the default objective, so the fixed costs weigh as much as they ever do in a real sweep; --quick: 20.
EPOCHS, EPOCHS_QUICK = 50, 20
GRID = ["model=vae,iwae,infovae,logcosh", "optimizer=adam,rmsprop", "lr=1e-3,1e-2", "latent_dim=20"]
TARGETS = {"share": 0.85, "first_epoch": 3.0, "epoch": 1.3}
# A job's parts (result.json `timing`) in the order a job runs them; "epochs" is the training itself.
PARTS = ("imports", "setup", "data", "upload", "training_other", "baselines", "nll", "latent", "scoring_other",
         "test", "other", "artifacts", "result")
WHAT = {"imports": "imports (torch, the loop, scoring: a worker's first job)", "setup": "config checks, result record",
        "data": "data load and split", "upload": "matrix to the device", "training_other":
        "model, optimizer, metrics.csv, best weights", "baselines": "baselines (mean, PCA) and collapse diagnostics",
        "nll": "held-out likelihood (64 draws)", "latent": "latent scores (k-means, silhouette, probe)",
        "scoring_other": "scoring, the rest", "test": "test rows", "other": "the rest of the job",
        "artifacts": "artifact writing", "result": "result writing (result.json, log)"}
EPOCH_LINE = re.compile(r"^\[([0-9-]+ [0-9:,]+)\]\[vaebench\.epochs\]\[INFO\] - epoch 1/", re.M)
TIMING_LINE = re.compile(r"\]\[vaebench\.task\]\[INFO\] - timing (\{.*\})$", re.M)


def logged_at(stamp: str) -> float:
    """A run.log time stamp (logging's asctime: local time, milliseconds) as time.time() would give it."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def jobs_of(sweep_dir: Path) -> list[dict[str, Any]]:
    """Each job's epochs (metrics.csv), parts (run.log's timing line), first epoch's end and its threads_probe
    record (process, start, end)."""
    from threads_probe import PROBE_FILE

    jobs = []
    for result in sorted(sweep_dir.glob("*/result.json")):
        job = result.parent
        log = (job / "run.log").read_text()
        rows = (job / "metrics.csv").read_text().splitlines()
        column = rows[0].split(",").index("seconds")
        first = EPOCH_LINE.search(log)
        jobs.append({"name": job.name, "epochs": [float(r.split(",")[column]) for r in rows[1:]],
                     "timing": json.loads(TIMING_LINE.findall(log)[-1]),
                     "first_epoch_at": logged_at(first.group(1)) if first else None,
                     "probe": json.loads((job / PROBE_FILE).read_text()),
                     "status": json.loads(result.read_text())["status"]})
    return jobs


def efficiency(ctx: Context) -> None:
    """The 16-job sweep: epochs' share of the workers' time, command start to first epoch, each part's share."""
    shape = Context(ctx.args, ctx.tmp, shape=TCGA11, batch=BATCH)
    load(shape)  # the cache entry is made here: the sweep measures a warm start, as every sweep after the first
    out = ctx.tmp / "efficiency"
    cap = [f"trainer.max_epochs={EPOCHS_QUICK if ctx.args.quick else EPOCHS}"]
    args = ["-m", *GRID, *shape.data_overrides, *cap, "device=cpu", f"hydra.sweep.dir={out}",
            f"hydra.launcher.n_jobs={WORKERS}", "+hydra.callbacks.threads_probe._target_=threads_probe.ThreadsProbe"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")]))}
    started = time.time()
    proc = subprocess.run([vaebench_exe(), *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=3600)
    command = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: the efficiency sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    done = re.search(r"sweep done: (\d+) jobs .* in ([0-9.]+) s", proc.stdout + proc.stderr)
    sweep_s = float(done.group(2))
    sweep_started = json.loads((out / ".vaebench-sweep.json").read_text())["started"]
    jobs = jobs_of(out)
    worker_s = WORKERS * sweep_s
    epochs = sum(sum(j["epochs"]) for j in jobs)
    in_jobs = sum(j["probe"]["end"] - j["probe"]["start"] for j in jobs)
    parts = {p: [j["timing"].get(p, 0.0) for j in jobs] for p in PARTS}
    accounted = epochs + sum(sum(v) for v in parts.values())
    n_epochs = [len(j["epochs"]) for j in jobs]
    share = epochs / worker_s
    size = f"{TCGA11[0]:,} x {TCGA11[1]:,}"
    ctx.table.add("efficiency", f"{len(jobs)} runs ({size}, batch {BATCH}), {WORKERS} workers: epochs' share of their time",
                  f"{100 * share:.1f} %", reference=f"{worker_s:.1f} s", target=f">= {100 * TARGETS['share']:.0f} %",
                  met=share >= TARGETS["share"],
                  note=f"sum of metrics.csv seconds {epochs:.1f} s over {WORKERS} x the sweep's {sweep_s:.1f} s "
                       f"(Hydra's 'sweep done'); of the command's {command:.1f} s: {100 * epochs / (WORKERS * command):.1f} %; "
                       f"{sum(n_epochs)} epochs, {min(n_epochs)} to {max(n_epochs)} a run"
                       f" (max_epochs {EPOCHS_QUICK if ctx.args.quick else EPOCHS}); {sum(j['status'] == 'ok' for j in jobs)}/{len(jobs)} ok")
    first_at = min(j["first_epoch_at"] for j in jobs if j["first_epoch_at"])
    first_job = min(j["probe"]["start"] for j in jobs)
    to_first = first_at - started
    ctx.table.add("efficiency", "command start to the end of the first epoch", secs(to_first),
                  target=f"< {TARGETS['first_epoch']:.0f} s", met=to_first < TARGETS["first_epoch"],
                  note=f"main process until the sweep starts (python, Hydra, the grid's checks) "
                       f"{sweep_started - started:.2f} s; until a worker starts its first job {first_job - sweep_started:.2f} s; "
                       f"that job to its first epoch's end {first_at - first_job:.2f} s")
    for part in PARTS:
        values = parts[part]
        if not any(values):
            continue
        paid = [v for v in values if v >= 0.005] or [0.0]
        ctx.table.add("efficiency", f"part: {WHAT[part]}", secs(sum(values)), reference=secs(worker_s),
                      note=f"{100 * sum(values) / worker_s:.1f} % of the workers' time; {len(paid)} of {len(jobs)} "
                           f"jobs paid it, median of those {median(paid):.3f} s, most {max(values):.3f} s")
    ctx.table.add("efficiency", "part: a job's time outside vaebench.task.run", secs(in_jobs - accounted),
                  reference=secs(worker_s), note=f"{100 * (in_jobs - accounted) / worker_s:.1f} % of the workers' "
                  f"time; the cli's resume check, job claim and progress line (a job as threads_probe.py sees it)")
    ctx.table.add("efficiency", "part: workers' start-up and idle time", secs(worker_s - in_jobs), reference=secs(worker_s),
                  note=f"{100 * (worker_s - in_jobs) / worker_s:.1f} % of the workers' time; spawn and imports before a "
                       f"worker's first job, Hydra's set-up of each job (its config, .hydra/), waiting for the last job at the end")
    ctx.raw["efficiency"] = {"command_s": command, "sweep_s": sweep_s, "epochs_s": epochs, "share": share,
                             "to_first_epoch_s": to_first, "sweep_started_s": sweep_started - started,
                             "first_job_s": first_job - started, "jobs": jobs}


def small_epoch(ctx: Context) -> None:
    """The TCGA-11-sized epoch (1,084 training rows, batch 100: 11 steps; 120 validation rows) against its floor,
    with one torch thread as each of a 2-core sweep's workers runs it."""
    shape = Context(ctx.args, ctx.tmp, shape=TCGA11, batch=BATCH)
    load(shape)
    repeats = 5 if ctx.args.quick else 12  # 0.2 s epochs: more pairs than the big epochs for a steady median
    r = paired(shape, "vae", 20, torch.device("cpu"), threads=1, repeats=repeats)
    ctx.table.add("floor", f"VAE-shaped matmuls, {TCGA11[0]:,} x {TCGA11[1]:,}, batch {BATCH}, latent 20, 1 thread",
                  secs(median(r["floor"])), note="11 training steps fwd+bwd + 2 validation batches fwd, torch.mm")
    ctx.table.add("epoch", f"vae, {TCGA11[0]:,} x {TCGA11[1]:,}, batch {BATCH}, latent 20, 1 thread",
                  secs(median(r["real"])), reference=secs(median(r["floor"])), ratio=r["ratio"], cpu=r["cpu_ratio"],
                  target=f"<= {TARGETS['epoch']:.2f}x",
                  met="wall " + ("yes" if r["ratio"] <= TARGETS["epoch"] else "**no**") + ", CPU "
                      + ("yes" if r["cpu_ratio"] <= TARGETS["epoch"] else "**no**"),
                  note=f"the default objective (calibrated decoder); median of {len(r['ratios'])} pairs; "
                       f"spread of the CPU ratios {min(r['cpu_ratios']):.2f}x to {max(r['cpu_ratios']):.2f}x")
    adam, weights = optimizer_epoch(shape)
    ctx.table.add("epoch", "  of which Adam's 11 steps alone (1 thread, CPU time)", secs(adam),
                  reference=secs(median(r["cpu_floor"])), ratio=adam / median(r["cpu_floor"]),
                  note=f"optimizer.step() over the model's {weights:,} weights with random gradients: ~7 elementwise passes "
                       f"each, memory-bound; foreach=True is no faster and fused=True changes the last bit")
    ctx.raw["small_epoch"] = {**r, "adam_epoch_cpu_s": adam}


def optimizer_epoch(ctx: Context) -> tuple[float, int]:
    """CPU time of the 11 optimizer steps of one small-data epoch (the default Adam), one thread, and the weights
    they update: a part of the epoch the floor does not have and eager PyTorch cannot shrink without changing the
    numbers."""
    from vaebench.models import build_model

    cfg = compose_config(*ctx.data_overrides, "model=vae", "latent_dim=20")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(cfg.model, ctx.shape[1], 20)
        params = list(model.parameters())
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        steps = -(-len(ctx.train_idx) // ctx.batch)  # 11: vaebench.train's batches, the last one short
        times = []
        for _ in range(ctx.args.repeats + 3):
            for p in params:
                p.grad = torch.randn_like(p)
            started = time.process_time()
            for _ in range(steps):
                optimizer.step()
            times.append(time.process_time() - started)
    finally:
        torch.set_num_threads(saved)
    return median(times[1:]), sum(p.numel() for p in params)

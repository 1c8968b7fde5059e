"""Whole processes: the data's first preparation and cached load, one `vaebench` run (wall time against
its compute), a 12-run sweep with 1 and 2 workers, and InfoVAE's peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import (BATCH, BENCH_DIR, MODELS, N_GENES, N_SAMPLES, REPO, TARGETS, Context, compose_config,
                    has_trainer_key, load, median, run_cli, secs)


def data(ctx: Context) -> None:
    from vaebench.data import load_dataset

    cfg = compose_config(*ctx.data_overrides)
    started = time.perf_counter()
    load_dataset(cfg.data, cfg.trainer.val_fraction, cfg.seed)
    first = time.perf_counter() - started
    loads, copies = [], []
    for _ in range(ctx.args.repeats + 2):
        started = time.perf_counter()
        data = load_dataset(cfg.data, cfg.trainer.val_fraction, cfg.seed)
        loaded = time.perf_counter()
        x = torch.tensor(np.asarray(data.x))  # what vaebench.task.resident_tensor does
        loads.append(time.perf_counter() - started)
        copies.append(time.perf_counter() - loaded)
        del x
    load(ctx)
    mb = ctx.x.numel() * 4 / 2**20
    ctx.table.add("data", f"first preparation, {N_SAMPLES:,} x {N_GENES:,} (generate + cache)", secs(first),
                  note=f"float32, {mb:.0f} MB, into an empty cache dir")
    cached = median(loads)
    ctx.table.add("data", "cached load (memory-map + copy into a tensor)", secs(cached),
                  reference=secs(first), ratio=cached / first, target=f"< {TARGETS['cached_load']} s",
                  met=cached < TARGETS["cached_load"],
                  note=f"of which copy {median(copies):.3f} s; page cache warm; median of {len(loads)}")
    ctx.raw["data"] = {"first_s": first, "cached_s": loads, "copy_s": copies}


def run_overrides(ctx: Context, out: Path, *extra: str) -> list[str]:
    metrics_off = ["trainer.latent_metrics=false"] if has_trainer_key("latent_metrics") else []
    return [*ctx.data_overrides, "model=vae", "latent_dim=100", "trainer.max_epochs=1",
            f"hydra.run.dir={out}", *metrics_off, *extra]


IMPORTS = """
import json, time
t0 = time.perf_counter(); import torch, hydra, vaebench.cli, vaebench.train, vaebench.data
t1 = time.perf_counter(); import vaebench.task
t2 = time.perf_counter(); print(json.dumps([t1 - t0, t2 - t1]))
"""


def one_run(ctx: Context, device: str) -> None:
    """One `vaebench` process of one epoch. Its compute is one steady-state epoch (the epoch rows'
    median for the same model and size); everything else in its wall time is fixed cost."""
    tag = "" if device == "cpu" else f" [{device}]"
    walls, run_times = [], []
    for i in range(ctx.args.repeats):
        out = ctx.tmp / f"run-{device}-{i}"
        walls.append(run_cli(run_overrides(ctx, out, f"device={device}")))
        run_times.append(json.loads((out / "result.json").read_text())["wall_time_s"])
    imports, starts = [], []
    for _ in range(ctx.args.repeats):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", IMPORTS], cwd=REPO, check=True, capture_output=True,
                              text=True)
        starts.append(time.perf_counter() - started)
        imports.append(json.loads(proc.stdout))
    core, task = (median([i[k] for i in imports]) for k in range(2))
    steady = ctx.raw.get(f"epochs_{device}", {}).get("vae@100")
    compute = median(steady["real"]) if steady else median(run_times)
    wall = median(walls)
    fixed = wall - compute
    ctx.table.add("run", f"one run: vaebench, vae latent 100, 1 epoch{tag}", secs(wall),
                  note=f"process start to exit, median of {len(walls)}")
    ctx.table.add("run", f"its compute: one steady epoch{tag}", secs(compute),
                  note="the vae latent-100 epoch row" if steady else "the run's own time (result.json wall_time_s)")
    ctx.table.add("run", f"fixed cost = wall - compute{tag}", secs(fixed), reference=secs(compute),
                  ratio=fixed / compute, target=f"< {TARGETS['fixed']:.0f} s" if device == "cpu" else "",
                  met=fixed < TARGETS["fixed"] if device == "cpu" else None,
                  note=f"imports: torch + hydra + vaebench core {core:.2f} s, vaebench.task's extra "
                        f"(torch._dynamo, which torch.optim needs, ...) {task:.2f} s; the run's own time "
                        f"(result.json wall_time_s: training, baselines, held-out likelihood) "
                        f"{median(run_times):.2f} s; python start and exit ~{median(starts) - core - task:.2f} s")
    ctx.raw[f"run_{device}"] = {"wall": walls, "run_time": run_times, "imports": imports, "starts": starts,
                                "compute": compute}
    if device == "cpu" and has_trainer_key("latent_metrics"):  # the default scoring after training
        out = ctx.tmp / "run-latent"
        run_cli(run_overrides(ctx, out, "device=cpu", "trainer.latent_metrics=true"))
        seconds = json.loads((out / "result.json").read_text()).get("latent_seconds")
        if seconds is not None:
            ctx.table.add("run", "+ latent metrics after training (default on)", secs(seconds),
                          note="trainer.latent_metrics; off in the other run and sweep rows")


def sweep(ctx: Context, device: str, variants: tuple[tuple[int, str], ...], per_gpu: tuple[int, ...] = (),
          seeds: int = 1) -> None:
    """The same multirun (4 models x 3 latent sizes x `seeds` seeds) per (workers, OMP_WAIT_POLICY) variant;
    "" = the environment's policy. per_gpu: on CUDA, the variants are k jobs per GPU instead (jobs_per_gpu=k,
    k x GPUs workers). Each job records (threads_probe.py) its process, its torch threads and when it ran."""
    from threads_probe import PROBE_FILE

    tag = "" if device == "cpu" else f" [{device}]"
    cores = os.cpu_count() or 1
    data = ctx.data_overrides if not ctx.args.quick else [
        "data.n_samples=2000", "data.n_genes=1000", f"data.cache_dir={ctx.cache}", "trainer.batch_size=200"]
    size = "11,000 x 5,000" if not ctx.args.quick else "2,000 x 1,000"
    metrics_off = ["trainer.latent_metrics=false"] if has_trainer_key("latent_metrics") else []
    runs = len(MODELS) * 3 * seeds
    gpus = torch.cuda.device_count() if per_gpu else 0
    variants = tuple((gpus * k, "") for k in per_gpu) or variants
    first_wall = 0.0
    for i, (n, policy) in enumerate(variants):
        k = per_gpu[i] if per_gpu else None
        out = ctx.tmp / f"sweep-{device}-{n}-{policy or 'env'}"
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")]))}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        wall = run_cli(["-m", f"model={','.join(MODELS)}", "latent_dim=10,100,200", "trainer.max_epochs=1",
                        f"seed={','.join(map(str, range(seeds)))}", *([f"jobs_per_gpu={k}"] if k else []),
                        *data, *metrics_off, f"device={device}", f"hydra.sweep.dir={out}",
                        f"hydra.launcher.n_jobs={n}",
                        "+hydra.callbacks.threads_probe._target_=threads_probe.ThreadsProbe"], env=env)
        probes = [json.loads(p.read_text()) for p in out.rglob(PROBE_FILE)]
        results = [json.loads(p.read_text()) for p in out.rglob("result.json")]
        # Most torch threads in use at any moment: the sum over the jobs running then.
        events = sorted([(p["start"], p["torch_threads"]) for p in probes]
                        + [(p["end"], -p["torch_threads"]) for p in probes])
        busy, peak = 0, 0
        for _, delta in events:
            busy += delta
            peak = max(peak, busy)
        threads = sorted({p["torch_threads"] for p in probes})
        compute = sum(r.get("wall_time_s") or 0 for r in results)
        ok = sum(r.get("status") == "ok" for r in results)
        note = (f"{ok}/{len(results)} ok; {len({p['pid'] for p in probes})} worker processes x {threads} torch "
                f"threads, at most {peak} threads at once on {cores} cores; sum of fit() {compute:.1f} s")
        if k:
            shared = sum(bool(r.get("gpu_shared")) for r in results)
            note += (f"; {len({r.get('device') for r in results})} GPUs used, {shared} runs shared a GPU, "
                     f"{runs / wall:.2f} runs/s")
        first_wall = first_wall if i else wall
        is_target = (n, policy) == (2, "") and device == "cpu"
        per = f", {k} per GPU" if k else ""
        ctx.table.add("sweep", f"{runs} runs ({size}), {n} worker(s){per}{', OMP ' + policy if policy else ''}{tag}",
                      secs(wall), reference=secs(first_wall) if i else "", ratio=wall / first_wall if i else None,
                      target="<= 1.00x" if is_target else "", met=(wall <= first_wall) if is_target else None,
                      note=note)
        if peak > cores:
            ctx.table.add("sweep", "torch threads x workers exceed the cores", "**yes**", met=False)
        ctx.raw[f"sweep_{device}_{n}_{policy or 'env'}"] = {"wall": wall, "probes": probes, "peak": peak}


def memory(ctx: Context, device: str, latents: tuple[int, ...]) -> None:
    tag = "" if device == "cpu" else f" [{device}]"
    peaks = {}
    for latent in latents:
        out = ctx.tmp / f"mem-{device}-{latent}"
        metrics_off = ["trainer.latent_metrics=false"] if has_trainer_key("latent_metrics") else []
        run_cli([*ctx.data_overrides, "model=infovae", f"latent_dim={latent}", "trainer.max_epochs=1",
                 f"device={device}", f"hydra.run.dir={out}", *metrics_off])
        result = json.loads((out / "result.json").read_text())
        peaks[latent] = result["peak_memory_mb"]
        naive = BATCH * BATCH * latent * 4 / 2**20
        note = f"{result['peak_memory_kind']}; status {result['status']}"
        if latent != latents[0]:
            grew = peaks[latent] - peaks[latents[0]]
            note += f"; {grew:+.0f} MB vs latent {latents[0]} (a [B,B,D] kernel: +{naive:.0f} MB)"
        ctx.table.add("memory", f"InfoVAE latent {latent}, batch {BATCH}, peak{tag}", f"{peaks[latent]:.0f} MB",
                      reference=f"B^2 x D x 4 B = {naive:.0f} MB", note=note)
    ctx.raw[f"memory_{device}"] = peaks


def likelihood(ctx: Context) -> None:
    """The held-out likelihood's cost (trainer.nll_samples, default K = 64) against the default run it scores:
    one `vaebench` run with every default (objective, batch, stopping) on the built-in matrix; the run's own
    result records both (nll_seconds, wall_time_s). --quick caps it at 10 epochs, which overstates the share."""
    out = ctx.tmp / "run-nll"
    cap = ["trainer.max_epochs=10"] if ctx.args.quick else []
    run_cli([f"data.n_samples={N_SAMPLES}", f"data.n_genes={N_GENES}", f"data.cache_dir={ctx.cache}",
             f"hydra.run.dir={out}", "trainer.save_model=false", "trainer.save_latent=false", *cap])
    result = json.loads((out / "result.json").read_text())
    nll, wall = result["nll_seconds"], result["wall_time_s"]
    ctx.table.add("nll", f"held-out likelihood, K = {result['nll_is_samples']} draws x {result['n_val']:,} rows",
                  secs(nll), reference=secs(wall), ratio=nll / wall, target="<= 0.10x", met=nll / wall <= 0.10,
                  note=f"reference: the default run it scores (vae, latent {result['latent_dim']}, "
                       f"{result['epochs_run']} epochs, batch {result['batch_size']}), wall_time_s")
    ctx.raw["nll"] = {"nll_seconds": nll, "wall_time_s": wall, "epochs": result["epochs_run"]}

"""Epochs in this process: vaebench's own epoch (vaebench.train.fit) paired with a floor epoch, the same VAE
through a plain DataLoader loop, trainer.compile / trainer.amp, and the same in fresh processes (OpenMP
wait policy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Optional

import torch

from common import BENCH_DIR, MODELS, REPO, TARGETS, Context, compose_config, has_trainer_key, median, secs
from matmul_floor import Floor, epoch_rows


def paired(ctx: Context, model_name: str, latent: int, device: torch.device, extra: tuple[str, ...] = (),
           threads: Optional[int] = None, repeats: Optional[int] = None) -> dict[str, Any]:
    """fit() for repeats + 1 epochs (default: --repeats); after each epoch one floor epoch. The first pair is
    warm-up.

    Wall times (what a user waits) and this process's CPU time (robust to other processes' load:
    with threads=1 nothing spins, so it is the work itself) of each epoch and each floor epoch.
    """
    from vaebench.models import build_model
    from vaebench.train import fit

    cfg = compose_config(*ctx.data_overrides, f"model={model_name}", f"latent_dim={latent}",
                         f"trainer.max_epochs={(repeats or ctx.args.repeats) + 1}", "trainer.rel_tol=0",
                         f"trainer.patience={(repeats or ctx.args.repeats) + 1}",
                         f"device={device}", *extra)
    train_rows, val_rows = epoch_rows(len(ctx.train_idx), len(ctx.val_idx), cfg.trainer.batch_size,
                                      cfg.trainer.drop_last)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads or saved_threads)
    try:
        floor = Floor(build_model(cfg.model, ctx.x.shape[1], latent), train_rows, val_rows, device)
        floor.epoch()
        floors: list[float] = []
        cpu: list[tuple[float, float]] = []  # process time of each epoch and of the floor epoch after it
        mark = [time.process_time()]

        def between_epochs(row: dict[str, float]) -> None:
            ended = time.process_time()
            floors.append(floor.epoch())
            cpu.append((ended - mark[0], time.process_time() - ended))
            mark[0] = time.process_time()

        x = ctx.x.to(device)
        result = fit(cfg, x, ctx.train_idx, ctx.val_idx, on_epoch=between_epochs)
    finally:
        torch.set_num_threads(saved_threads)
    real = [row["seconds"] for row in result.history]
    out = {"real": real[1:], "floor": floors[1:], "first_epoch": real[0],
           "ratios": [r / f for r, f in zip(real[1:], floors[1:])],
           "cpu_real": [c[0] for c in cpu[1:]], "cpu_floor": [c[1] for c in cpu[1:]],
           "threads": threads or saved_threads}
    out["cpu_ratios"] = [r / f for r, f in zip(out["cpu_real"], out["cpu_floor"])]
    out["ratio"], out["cpu_ratio"] = median(out["ratios"]), median(out["cpu_ratios"])
    return out


def epochs(ctx: Context, device: torch.device, latents: tuple[int, ...], one_thread: tuple[int, ...] = ()) -> None:
    """Each model at each latent size; at the latents in one_thread also once more with one torch thread,
    whose CPU-time ratio is the load-independent figure (a shared machine inflates the wall ratio)."""
    tag = "" if device.type == "cpu" else f" [{device.type}]"
    results: dict[str, Any] = {}
    for latent in latents:
        for model_name in MODELS:
            r = paired(ctx, model_name, latent, device)
            results[f"{model_name}@{latent}"] = r
            single = None
            if device.type == "cpu" and latent in one_thread:
                single = paired(ctx, model_name, latent, device, threads=1)
                results[f"{model_name}@{latent}/1thread"] = single
            if model_name == "vae":
                ctx.table.add("floor", f"VAE-shaped matmuls, latent {latent}{tag}", secs(median(r["floor"])),
                              note="training fwd+bwd + validation fwd, torch.mm")
            if model_name in ("iwae", "infovae"):
                what = "IWAE, 5-sample decoder" if model_name == "iwae" else "InfoVAE, + MMD kernels"
                ctx.table.add("floor", f"{what}, latent {latent}{tag}", secs(median(r["floor"])))
            target = TARGETS["vae@100"] if (model_name, latent) == ("vae", 100) else TARGETS["epoch"]
            met = None
            if device.type == "cpu":
                met = "wall " + ("yes" if r["ratio"] <= target else "**no**")
                if single:
                    met += ", CPU " + ("yes" if single["cpu_ratio"] <= target else "**no**")
            ctx.table.add("epoch", f"{model_name}, latent {latent}{tag}", secs(median(r["real"])),
                          reference=secs(median(r["floor"])), ratio=r["ratio"],
                          cpu=single["cpu_ratio"] if single else None,
                          target=f"<= {target:.2f}x" if device.type == "cpu" else "", met=met,
                          note=f"median of {len(r['ratios'])} pairs; first epoch {r['first_epoch']:.2f} s")
    ctx.raw[f"epochs_{device.type}"] = results


def opt_in(ctx: Context, device: torch.device, latent: int) -> None:
    """trainer.compile / trainer.amp (and trainer.cuda_graphs on a GPU), measured the same way (first epoch =
    compile time)."""
    if not (has_trainer_key("compile") and has_trainer_key("amp")):
        return
    tag = "" if device.type == "cpu" else f" [{device.type}]"
    models = MODELS if device.type == "cuda" else ("vae",)
    settings = [("compile", ("trainer.compile=true",)), ("amp", ("trainer.amp=true",)),
                ("compile+amp", ("trainer.compile=true", "trainer.amp=true"))]
    if device.type == "cuda" and has_trainer_key("cuda_graphs"):  # the whole step replayed as CUDA graphs
        settings += [("cuda_graphs", ("trainer.cuda_graphs=true",)),
                     ("cuda_graphs+amp", ("trainer.cuda_graphs=true", "trainer.amp=true"))]
    for model_name in models:
        for name, extra in settings:
            try:
                r = paired(ctx, model_name, latent, device, extra)
            except Exception as e:  # noqa: BLE001 - e.g. no C++ compiler for inductor: a row, not a crash
                ctx.table.add("opt-in", f"{model_name}, latent {latent}, {name}{tag}", "failed",
                              note=f"{type(e).__name__}: {str(e).splitlines()[0][:80]}")
                continue
            ctx.raw[f"optin_{device.type}_{model_name}_{name}"] = r
            ctx.table.add("opt-in", f"{model_name}, latent {latent}, {name}{tag}", secs(median(r["real"])),
                          reference=secs(median(r["floor"])), ratio=r["ratio"],
                          note=f"first epoch {r['first_epoch']:.1f} s"
                                + (" (compiles, cold cache)" if "compile" in name or "graphs" in name else "") + "; float32 floor")


def naive(ctx: Context, latents: tuple[int, ...]) -> None:
    """The same VAE through DataLoader(TensorDataset), in a fresh process: a plain loop whose process
    never ran vaebench's fit (so the allocator is glibc's default, as in anyone's own script)."""
    results = child(ctx, "naive", ",".join(map(str, latents)), "0")
    for latent in latents:
        r = results[str(latent)]
        vb = ctx.raw.get("epochs_cpu", {}).get(f"vae@{latent}")
        note = "fresh process; per-sample indexing + collate, loss.item() per step"
        if vb:
            note += f"; vaebench's epoch {median(vb['real']) / median(vb['floor']):.2f}x its floor"
        ctx.table.add("naive", f"vae, latent {latent}, DataLoader(TensorDataset)", secs(median(r["real"])),
                      reference=secs(median(r["floor"])), ratio=r["ratio"], note=note)
    ctx.raw["naive"] = results


def naive_epochs(ctx: Context, latent: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader, TensorDataset

    from vaebench.models import build_model

    cfg = compose_config(*ctx.data_overrides, "model=vae", f"latent_dim={latent}", "device=cpu")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, ctx.x.shape[1], latent)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x_train, x_val = ctx.x[ctx.train_idx], ctx.x[ctx.val_idx]
    train = DataLoader(TensorDataset(x_train), batch_size=cfg.trainer.batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x_val), batch_size=cfg.trainer.batch_size)
    kld = cfg.trainer.batch_size / len(x_train)
    train_rows, val_rows = epoch_rows(len(x_train), len(x_val), cfg.trainer.batch_size, False)
    floor = Floor(model, train_rows, val_rows, torch.device("cpu"))
    floor.epoch()
    real, floors = [], []
    for _ in range(ctx.args.repeats + 1):
        started = time.perf_counter()
        model.train()
        for (xb,) in train:
            loss = model.loss(model(xb), xb, kld)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        model.eval()
        with torch.no_grad():
            for (xb,) in val:
                model.loss(model(xb), xb, kld)["loss"].item()
        real.append(time.perf_counter() - started)
        floors.append(floor.epoch())
    ratios = [r / f for r, f in zip(real[1:], floors[1:])]
    return {"real": real[1:], "floor": floors[1:], "first_epoch": real[0], "ratios": ratios,
            "ratio": median(ratios)}


def child(ctx: Context, kind: str, what: str, arg: str, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Run `bench.py --child KIND WHAT ARG` (see child()) and return its JSON."""
    cmd = [sys.executable, str(BENCH_DIR / "bench.py"), "--child", kind, what, arg, "--repeats", str(ctx.args.repeats),
           "--tmp", str(ctx.tmp)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env or dict(os.environ))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"bench: the child process ({kind} {what} {arg}) failed")
    return json.loads(proc.stdout.splitlines()[-1])


def child_epochs(ctx: Context, models: tuple[str, ...], latent: int, policy: Optional[str]) -> dict[str, Any]:
    """paired() in a fresh process (the OpenMP runtime reads its settings when torch loads);
    policy None = OMP_WAIT_POLICY unset (libgomp's default: spin a while, then sleep)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    return child(ctx, "epochs", ",".join(models), str(latent), env)


def omp(ctx: Context, models: tuple[str, ...], latent: int) -> None:
    results = {policy: child_epochs(ctx, models, latent, policy) for policy in (None, "PASSIVE")}
    for model_name in models:
        base = results[None][model_name]
        for policy, by_model in results.items():
            r = by_model[model_name]
            note = "fresh process"
            if policy:
                note += f"; epoch {median(r['real']) / median(base['real']):.2f}x the unset policy's"
            ctx.table.add("omp", f"{model_name}, latent {latent}, OMP_WAIT_POLICY {policy or 'unset'}",
                          secs(median(r["real"])), reference=secs(median(r["floor"])), ratio=r["ratio"],
                          note=note)
    ctx.raw["omp"] = {str(k): v for k, v in results.items()}

"""`make bench`: where one epoch, one run and one sweep of vaebench spend their time, as one table.

    .venv/bin/python bench/bench.py            # full run (about 10 minutes on 2 shared cores)
    .venv/bin/python bench/bench.py --quick    # latent 100 only, fewer repeats, small sweep data
    make bench [QUICK=1]

Every figure comes from this one invocation, so ratios compare like with like:
  floor     the bare matrix products of one epoch (torch.mm on tensors of the same shapes and layouts as
            the model's: forward and backward of every training batch, forward of every validation batch)
  epoch     vaebench's real epoch (vaebench.train.fit: training, validation, checks) on the same data;
            each epoch is followed by one floor epoch and the ratio is the median of those pairs, so a
            burst of load from other processes hits both sides of a pair alike
  naive     the same VAE trained through torch.utils.data.DataLoader(TensorDataset), for contrast
  data      first preparation of the 11,000 x 5,000 synthetic matrix vs its cached load
  run       one `vaebench` process of one epoch: wall time vs its compute
  sweep     a 12-run multirun with 1 and with 2 joblib workers, and the torch threads each job used
  memory    peak memory of InfoVAE at latent 200, batch 1000 (its MMD must not cost batch^2 x latent)
  omp       the latent-100 epochs again in fresh processes, with the OpenMP runtime's default wait policy
            and with OMP_WAIT_POLICY=PASSIVE (idle threads sleep instead of spinning): on a shared
            machine a spinning thread loses its core and every parallel region waits for it
On a machine with CUDA the epochs (also with trainer.compile / trainer.amp), a run and the sweep are
measured on the GPU too. Timings on a shared machine are noisy: medians of repeats, and ratios within
pairs; never assert them in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import vaebench  # noqa: F401 - before torch: whatever the package sets up before torch loads holds here too
import numpy as np
import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
N_SAMPLES, N_GENES, BATCH = 11000, 5000, 1000
LATENTS = (10, 100, 200)
MODELS = ("vae", "iwae", "infovae", "logcosh")
TARGETS = {"vae@100": 1.15, "epoch": 1.25, "cached_load": 0.5, "fixed": 3.0}


# ---------------------------------------------------------------------------------------------- helpers

def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose_config(*overrides: str):
    """The typed config vaebench would run with these command-line overrides."""
    from hydra import compose, initialize_config_dir

    from vaebench.cli import conf_dir
    from vaebench.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return validate(compose(config_name="config", overrides=list(overrides)))


def has_trainer_key(key: str) -> bool:
    from vaebench.config import TrainerConfig

    return key in TrainerConfig.__dataclass_fields__


def vaebench_exe() -> str:
    return str(Path(sys.executable).with_name("vaebench"))


def run_cli(args: list[str], env: Optional[dict] = None, timeout: float = 1200) -> float:
    """Run the installed `vaebench` as a user would; return its wall time (process start to exit)."""
    started = time.perf_counter()
    proc = subprocess.run([vaebench_exe(), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"bench: vaebench {' '.join(args)} failed with exit status {proc.returncode}")
    return wall


class Table:
    """The one table the bench prints: a row per figure, with its reference and target where it has them."""

    COLUMNS = [("section", "section"), ("what", "measurement"), ("value", "median"), ("reference", "reference"),
               ("ratio", "ratio"), ("cpu", "CPU-time ratio, 1 thread"), ("target", "target"), ("met", "met"),
               ("note", "note")]

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, section: str, what: str, value: str, reference: str = "", ratio: Optional[float] = None,
            target: str = "", met: Optional[str | bool] = None, note: str = "", cpu: Optional[float] = None) -> None:
        if isinstance(met, bool):
            met = "yes" if met else "**no**"
        self.rows.append({"section": section, "what": what, "value": value, "reference": reference,
                          "ratio": "" if ratio is None else f"{ratio:.2f}x", "target": target, "met": met or "",
                          "cpu": "" if cpu is None else f"{cpu:.2f}x", "note": note})
        r = self.rows[-1]
        print(f"  {section:7s} {what:52s} {value:>9s} {r['ratio']:>6s} {r['cpu']:>6s}  {note}", flush=True)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(h for _, h in self.COLUMNS) + " |", "|" + "---|" * len(self.COLUMNS)]
        lines += ["| " + " | ".join(str(r[k]) for k, _ in self.COLUMNS) + " |" for r in self.rows]
        return "\n".join(lines)


def secs(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


# ------------------------------------------------------------------------------------------------ floor

class Floor:
    """The bare matrix products of one epoch of `model`, timed with torch.mm.

    For every nn.Linear (K -> N) on M rows: the forward product x[M,K] @ W[N,K].T, and in training the two
    backward products grad[M,N].T @ x (weight gradient) and grad @ W (input gradient; not for the first
    encoder layer, whose input is the data). IWAE's decoder runs on batch x num_samples rows. InfoVAE adds
    its MMD's three [B,D] x [D,B] kernel products and their three backward products. Validation batches
    are forward only. Bias adds, activations, losses, BatchNorm and the optimizer are not in the floor:
    they are what the real epoch may add on top.
    """

    def __init__(self, model: nn.Module, train_rows: list[int], val_rows: list[int], device: torch.device):
        self.device = device
        self.gen = torch.Generator(device=device).manual_seed(1234)
        self.cache: dict[tuple[int, ...], Tensor] = {}
        self.ops: list[tuple[Tensor, Tensor]] = []
        for rows in train_rows:
            self.ops += self._step(model, rows, backward=True)
        for rows in val_rows:
            self.ops += self._step(model, rows, backward=False)

    def _t(self, *shape: int) -> Tensor:
        if shape not in self.cache:  # never the global RNG: the floor runs between fit's epochs
            self.cache[shape] = torch.empty(shape, device=self.device).normal_(generator=self.gen)
        return self.cache[shape]

    def _linear(self, layer: nn.Linear, rows: int, backward: bool, grad_in: bool) -> list[tuple[Tensor, Tensor]]:
        k, n = layer.in_features, layer.out_features
        x, w, g = self._t(rows, k), self._t(n, k), self._t(rows, n)
        ops = [(x, w.t())]
        if backward:
            ops.append((g.t(), x))
            if grad_in:
                ops.append((g, w))
        return ops

    def _step(self, model: nn.Module, b: int, backward: bool) -> list[tuple[Tensor, Tensor]]:
        s = getattr(model, "num_samples", 1)
        enc = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
        dec = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
        fwd: list[tuple[Tensor, Tensor]] = []
        bwd: list[tuple[Tensor, Tensor]] = []

        def add(ops: list[tuple[Tensor, Tensor]]) -> None:
            fwd.append(ops[0])
            bwd.extend(ops[1:])

        for i, layer in enumerate(enc):
            add(self._linear(layer, b, backward, grad_in=i > 0))
        for layer in (model.fc_mu, model.fc_log_var):
            add(self._linear(layer, b, backward, grad_in=True))
        for layer in dec:
            add(self._linear(layer, b * s, backward, grad_in=True))
        if hasattr(model, "mmd"):  # k(prior, prior), k(z, z), k(prior, z); gradients flow to z only
            d = model.latent_dim
            z, p, kern = self._t(b, d), self._t(b, d, 1)[..., 0], self._t(b, b)
            fwd += [(p, p.t()), (z, z.t()), (p, z.t())]
            if backward:
                bwd += [(kern, z), (kern.t(), z), (kern.t(), p)]
        return fwd + (bwd[::-1] if backward else [])

    def epoch(self) -> float:
        sync(self.device)
        started = time.perf_counter()
        for a, b in self.ops:
            torch.mm(a, b)
        sync(self.device)
        return time.perf_counter() - started


def epoch_rows(n_train: int, n_val: int, batch: int, drop_last: bool) -> tuple[list[int], list[int]]:
    """Rows of each training and validation batch, exactly as vaebench.train batches them."""
    from vaebench.train import batch_bounds

    train = [e - s for s, e in batch_bounds(n_train, batch, drop_last)]
    val = batch_bounds(n_val, batch, drop_last=False)
    if val[-1][1] < n_val:
        val[-1] = (val[-1][0], n_val)
    return train, [e - s for s, e in val]


# ----------------------------------------------------------------------------------------------- epochs

class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args, self.tmp = args, tmp
        self.cache = tmp / "cache"
        self.table = Table()
        self.raw: dict[str, Any] = {}
        self.data_overrides = [f"data.n_samples={N_SAMPLES}", f"data.n_genes={N_GENES}",
                               f"data.cache_dir={self.cache}", f"trainer.batch_size={BATCH}"]
        self.x: Optional[Tensor] = None

    # --- data -------------------------------------------------------------------------------------
    def data(self) -> None:
        from vaebench.data import load_dataset

        cfg = compose_config(*self.data_overrides)
        started = time.perf_counter()
        load_dataset(cfg.data, cfg.trainer.val_fraction, cfg.seed)
        first = time.perf_counter() - started
        loads, copies = [], []
        for _ in range(self.args.repeats + 2):
            started = time.perf_counter()
            data = load_dataset(cfg.data, cfg.trainer.val_fraction, cfg.seed)
            loaded = time.perf_counter()
            x = torch.tensor(np.asarray(data.x))  # what vaebench.task.resident_data does
            loads.append(time.perf_counter() - started)
            copies.append(time.perf_counter() - loaded)
            del x
        self.load()
        mb = self.x.numel() * 4 / 2**20
        self.table.add("data", f"first preparation, {N_SAMPLES:,} x {N_GENES:,} (generate + cache)", secs(first),
                       note=f"float32, {mb:.0f} MB, into an empty cache dir")
        cached = median(loads)
        self.table.add("data", "cached load (memory-map + copy into a tensor)", secs(cached),
                       reference=secs(first), ratio=cached / first, target=f"< {TARGETS['cached_load']} s",
                       met=cached < TARGETS["cached_load"],
                       note=f"of which copy {median(copies):.3f} s; page cache warm; median of {len(loads)}")
        self.raw["data"] = {"first_s": first, "cached_s": loads, "copy_s": copies}

    def load(self) -> None:
        """The matrix as a tensor and the run's split, as vaebench.task does (from the cache)."""
        from vaebench.data import load_dataset
        from vaebench.data.split import split_indices

        cfg = compose_config(*self.data_overrides)
        data = load_dataset(cfg.data, cfg.trainer.val_fraction, cfg.seed)
        self.x = torch.tensor(np.asarray(data.x))
        self.train_idx, self.val_idx = split_indices(len(self.x), data.labels, cfg.trainer.val_fraction, cfg.seed)

    # --- epochs -----------------------------------------------------------------------------------
    def paired(self, model_name: str, latent: int, device: torch.device, extra: tuple[str, ...] = (),
               threads: Optional[int] = None) -> dict[str, Any]:
        """fit() for repeats + 1 epochs; after each epoch one floor epoch. The first pair is warm-up.

        Wall times (what a user waits) and this process's CPU time (robust to other processes' load:
        with threads=1 nothing spins, so it is the work itself) of each epoch and each floor epoch.
        """
        from vaebench.models import build_model
        from vaebench.train import fit

        cfg = compose_config(*self.data_overrides, f"model={model_name}", f"latent_dim={latent}",
                             f"trainer.max_epochs={self.args.repeats + 1}", "trainer.rel_tol=0",
                             f"device={device}", *extra)
        train_rows, val_rows = epoch_rows(len(self.train_idx), len(self.val_idx), cfg.trainer.batch_size,
                                          cfg.trainer.drop_last)
        saved_threads = torch.get_num_threads()
        torch.set_num_threads(threads or saved_threads)
        try:
            floor = Floor(build_model(cfg.model, self.x.shape[1], latent), train_rows, val_rows, device)
            floor.epoch()
            floors: list[float] = []
            cpu: list[tuple[float, float, float]] = []  # process time: epoch end, floor start, floor end
            mark = [time.process_time()]

            def between_epochs(row: dict[str, float]) -> None:
                ended = time.process_time()
                floors.append(floor.epoch())
                cpu.append((ended - mark[0], time.process_time() - ended))
                mark[0] = time.process_time()

            x = self.x.to(device)
            result = fit(cfg, x, self.train_idx, self.val_idx, on_epoch=between_epochs)
        finally:
            torch.set_num_threads(saved_threads)
        real = [row["seconds"] for row in result.history]
        del floor, result
        out = {"real": real[1:], "floor": floors[1:], "first_epoch": real[0],
               "ratios": [r / f for r, f in zip(real[1:], floors[1:])],
               "cpu_real": [c[0] for c in cpu[1:]], "cpu_floor": [c[1] for c in cpu[1:]],
               "threads": threads or saved_threads}
        out["cpu_ratios"] = [r / f for r, f in zip(out["cpu_real"], out["cpu_floor"])]
        out["ratio"], out["cpu_ratio"] = median(out["ratios"]), median(out["cpu_ratios"])
        return out

    def epochs(self, device: torch.device, latents: tuple[int, ...], one_thread: tuple[int, ...] = ()) -> None:
        """Each model at each latent size; at the latents in one_thread also once more with one torch thread,
        whose CPU-time ratio is the load-independent figure (a shared machine inflates the wall ratio)."""
        tag = "" if device.type == "cpu" else f" [{device.type}]"
        results: dict[str, Any] = {}
        for latent in latents:
            for model_name in MODELS:
                r = self.paired(model_name, latent, device)
                results[f"{model_name}@{latent}"] = r
                single = None
                if device.type == "cpu" and latent in one_thread:
                    single = self.paired(model_name, latent, device, threads=1)
                    results[f"{model_name}@{latent}/1thread"] = single
                if model_name == "vae":
                    self.table.add("floor", f"VAE-shaped matmuls, latent {latent}{tag}", secs(median(r["floor"])),
                                   note="training fwd+bwd + validation fwd, torch.mm")
                if model_name in ("iwae", "infovae"):
                    what = "IWAE, 5-sample decoder" if model_name == "iwae" else "InfoVAE, + MMD kernels"
                    self.table.add("floor", f"{what}, latent {latent}{tag}", secs(median(r["floor"])))
                target = TARGETS["vae@100"] if (model_name, latent) == ("vae", 100) else TARGETS["epoch"]
                met = None
                if device.type == "cpu":
                    met = "wall " + ("yes" if r["ratio"] <= target else "**no**")
                    if single:
                        met += ", CPU " + ("yes" if single["cpu_ratio"] <= target else "**no**")
                self.table.add("epoch", f"{model_name}, latent {latent}{tag}", secs(median(r["real"])),
                               reference=secs(median(r["floor"])), ratio=r["ratio"],
                               cpu=single["cpu_ratio"] if single else None,
                               target=f"<= {target:.2f}x" if device.type == "cpu" else "", met=met,
                               note=f"median of {len(r['ratios'])} pairs; first epoch {r['first_epoch']:.2f} s")
        self.raw[f"epochs_{device.type}"] = results

    def opt_in(self, device: torch.device, latent: int) -> None:
        """trainer.compile / trainer.amp, measured the same way (first epoch = compile time)."""
        if not (has_trainer_key("compile") and has_trainer_key("amp")):
            return
        tag = "" if device.type == "cpu" else f" [{device.type}]"
        models = MODELS if device.type == "cuda" else ("vae",)
        settings = [("compile", ("trainer.compile=true",)), ("amp", ("trainer.amp=true",)),
                    ("compile+amp", ("trainer.compile=true", "trainer.amp=true"))]
        for model_name in models:
            for name, extra in settings:
                try:
                    r = self.paired(model_name, latent, device, extra)
                except Exception as e:  # noqa: BLE001 - e.g. no C++ compiler for inductor: a row, not a crash
                    self.table.add("opt-in", f"{model_name}, latent {latent}, {name}{tag}", "failed",
                                   note=f"{type(e).__name__}: {str(e).splitlines()[0][:80]}")
                    continue
                self.raw[f"optin_{device.type}_{model_name}_{name}"] = r
                self.table.add("opt-in", f"{model_name}, latent {latent}, {name}{tag}", secs(median(r["real"])),
                               reference=secs(median(r["floor"])), ratio=r["ratio"],
                               note=f"first epoch {r['first_epoch']:.1f} s"
                                    + (" (compiles, cold cache)" if "compile" in name else "") + "; float32 floor")

    def naive(self, latents: tuple[int, ...]) -> None:
        """The same VAE through DataLoader(TensorDataset), in a fresh process: a plain loop whose process
        never ran vaebench's fit (so the allocator is glibc's default, as in anyone's own script)."""
        results = self.child("naive", ",".join(map(str, latents)), "0")
        for latent in latents:
            r = results[str(latent)]
            vb = self.raw.get("epochs_cpu", {}).get(f"vae@{latent}")
            note = "fresh process; per-sample indexing + collate, loss.item() per step"
            if vb:
                note += f"; vaebench's epoch {median(vb['real']) / median(vb['floor']):.2f}x its floor"
            self.table.add("naive", f"vae, latent {latent}, DataLoader(TensorDataset)", secs(median(r["real"])),
                           reference=secs(median(r["floor"])), ratio=r["ratio"], note=note)
        self.raw["naive"] = results

    def naive_epochs(self, latent: int) -> dict[str, Any]:
        from torch.utils.data import DataLoader, TensorDataset

        from vaebench.models import build_model

        cfg = compose_config(*self.data_overrides, "model=vae", f"latent_dim={latent}", "device=cpu")
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, self.x.shape[1], latent)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        x_train, x_val = self.x[self.train_idx], self.x[self.val_idx]
        train = DataLoader(TensorDataset(x_train), batch_size=cfg.trainer.batch_size, shuffle=True)
        val = DataLoader(TensorDataset(x_val), batch_size=cfg.trainer.batch_size)
        kld = cfg.trainer.batch_size / len(x_train)
        train_rows, val_rows = epoch_rows(len(x_train), len(x_val), cfg.trainer.batch_size, False)
        floor = Floor(model, train_rows, val_rows, torch.device("cpu"))
        floor.epoch()
        real, floors = [], []
        for _ in range(self.args.repeats + 1):
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

    # --- fresh processes --------------------------------------------------------------------------
    def child(self, kind: str, what: str, arg: str, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
        """Run `bench.py --child KIND WHAT ARG` (see child()) and return its JSON."""
        cmd = [sys.executable, __file__, "--child", kind, what, arg, "--repeats", str(self.args.repeats),
               "--tmp", str(self.tmp)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env or dict(os.environ))
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"bench: the child process ({kind} {what} {arg}) failed")
        return json.loads(proc.stdout.splitlines()[-1])

    # --- OpenMP wait policy -----------------------------------------------------------------------
    def child_epochs(self, models: tuple[str, ...], latent: int, policy: Optional[str]) -> dict[str, Any]:
        """paired() in a fresh process (the OpenMP runtime reads its settings when torch loads);
        policy None = OMP_WAIT_POLICY unset (libgomp's default: spin a while, then sleep)."""
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        return self.child("epochs", ",".join(models), str(latent), env)

    def omp(self, models: tuple[str, ...], latent: int) -> None:
        results = {policy: self.child_epochs(models, latent, policy) for policy in (None, "PASSIVE")}
        for model_name in models:
            base = results[None][model_name]
            for policy, by_model in results.items():
                r = by_model[model_name]
                note = "fresh process"
                if policy:
                    note += f"; epoch {median(r['real']) / median(base['real']):.2f}x the unset policy's"
                self.table.add("omp", f"{model_name}, latent {latent}, OMP_WAIT_POLICY {policy or 'unset'}",
                               secs(median(r["real"])), reference=secs(median(r["floor"])), ratio=r["ratio"],
                               note=note)
        self.raw["omp"] = {str(k): v for k, v in results.items()}

    # --- one run ----------------------------------------------------------------------------------
    def run_overrides(self, out: Path, *extra: str) -> list[str]:
        metrics_off = ["trainer.latent_metrics=false"] if has_trainer_key("latent_metrics") else []
        return [*self.data_overrides, "model=vae", "latent_dim=100", "trainer.max_epochs=1",
                f"hydra.run.dir={out}", *metrics_off, *extra]

    IMPORTS = """
import json, time
t0 = time.perf_counter(); import torch, hydra, vaebench.cli, vaebench.train, vaebench.data
t1 = time.perf_counter(); import vaebench.task
t2 = time.perf_counter(); import torch._dynamo
t3 = time.perf_counter(); print(json.dumps([t1 - t0, t2 - t1, t3 - t2]))
"""

    def one_run(self, device: str) -> None:
        """One `vaebench` process of one epoch. Its compute is one steady-state epoch (the epoch rows'
        median for the same model and size); everything else in its wall time is fixed cost."""
        tag = "" if device == "cpu" else f" [{device}]"
        walls, fits = [], []
        for i in range(self.args.repeats):
            out = self.tmp / f"run-{device}-{i}"
            walls.append(run_cli(self.run_overrides(out, f"device={device}")))
            fits.append(json.loads((out / "result.json").read_text())["wall_time_s"])
        imports, starts = [], []
        for _ in range(self.args.repeats):
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", self.IMPORTS], cwd=REPO, check=True, capture_output=True,
                                  text=True)
            starts.append(time.perf_counter() - started)
            imports.append(json.loads(proc.stdout))
        core, task, dynamo = (median([i[k] for i in imports]) for k in range(3))
        steady = self.raw.get(f"epochs_{device}", {}).get("vae@100")
        compute = median(steady["real"]) if steady else median(fits)
        wall = median(walls)
        fixed = wall - compute
        self.table.add("run", f"one run: vaebench, vae latent 100, 1 epoch{tag}", secs(wall),
                       note=f"process start to exit, median of {len(walls)}")
        self.table.add("run", f"its compute: one steady epoch{tag}", secs(compute),
                       note="the vae latent-100 epoch row" if steady else "fit() of the run")
        self.table.add("run", f"fixed cost = wall - compute{tag}", secs(fixed), reference=secs(compute),
                       ratio=fixed / compute, target=f"< {TARGETS['fixed']:.0f} s" if device == "cpu" else "",
                       met=fixed < TARGETS["fixed"] if device == "cpu" else None,
                       note=f"imports: torch + hydra + vaebench core {core:.2f} s, vaebench.task's extra "
                            f"(scikit-learn, ...) {task:.2f} s; fit() {median(fits):.2f} s, of which the first "
                            f"torch.optim optimizer importing torch._dynamo {dynamo:.2f} s; python start and exit "
                            f"~{median(starts) - core - task - dynamo:.2f} s")
        self.raw[f"run_{device}"] = {"wall": walls, "fit": fits, "imports": imports, "starts": starts,
                                     "compute": compute}
        if device == "cpu" and has_trainer_key("latent_metrics"):  # the default scoring after training
            out = self.tmp / "run-latent"
            run_cli(self.run_overrides(out, "device=cpu", "trainer.latent_metrics=true"))
            seconds = json.loads((out / "result.json").read_text()).get("latent_seconds")
            if seconds is not None:
                self.table.add("run", "+ latent metrics after training (default on)", secs(seconds),
                               note="trainer.latent_metrics; off in the other run and sweep rows")

    # --- sweep ------------------------------------------------------------------------------------
    def sweep(self, device: str, variants: tuple[tuple[int, str], ...]) -> None:
        """The same 12-run multirun per (workers, OMP_WAIT_POLICY) variant; "" = the environment's policy.
        Each job records (threads_probe.py) its process, its torch threads and when it ran."""
        from threads_probe import PROBE_FILE

        tag = "" if device == "cpu" else f" [{device}]"
        cores = os.cpu_count() or 1
        data = self.data_overrides if not self.args.quick else [
            "data.n_samples=2000", "data.n_genes=1000", f"data.cache_dir={self.cache}", "trainer.batch_size=200"]
        size = "11,000 x 5,000" if not self.args.quick else "2,000 x 1,000"
        metrics_off = ["trainer.latent_metrics=false"] if has_trainer_key("latent_metrics") else []
        first_wall = 0.0
        for i, (n, policy) in enumerate(variants):
            out = self.tmp / f"sweep-{device}-{n}-{policy or 'env'}"
            env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")]))}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            wall = run_cli(["-m", f"model={','.join(MODELS)}", "latent_dim=10,100,200", "trainer.max_epochs=1",
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
            first_wall = first_wall if i else wall
            is_target = (n, policy) == (2, "") and device == "cpu"
            self.table.add("sweep", f"12 runs ({size}), {n} worker(s){', OMP ' + policy if policy else ''}{tag}",
                           secs(wall), reference=secs(first_wall) if i else "", ratio=wall / first_wall if i else None,
                           target="<= 1.00x" if is_target else "", met=(wall <= first_wall) if is_target else None,
                           note=note)
            if peak > cores:
                self.table.add("sweep", "torch threads x workers exceed the cores", "**yes**", met=False)
            self.raw[f"sweep_{device}_{n}_{policy or 'env'}"] = {"wall": wall, "probes": probes, "peak": peak}

    # --- memory -----------------------------------------------------------------------------------
    def memory(self, device: str, latents: tuple[int, ...]) -> None:
        tag = "" if device == "cpu" else f" [{device}]"
        peaks = {}
        for latent in latents:
            out = self.tmp / f"mem-{device}-{latent}"
            metrics_off = ["trainer.latent_metrics=false"] if has_trainer_key("latent_metrics") else []
            run_cli([*self.data_overrides, "model=infovae", f"latent_dim={latent}", "trainer.max_epochs=1",
                     f"device={device}", f"hydra.run.dir={out}", *metrics_off])
            result = json.loads((out / "result.json").read_text())
            peaks[latent] = result["peak_memory_mb"]
            naive = BATCH * BATCH * latent * 4 / 2**20
            note = f"{result['peak_memory_kind']}; status {result['status']}"
            if latent != latents[0]:
                grew = peaks[latent] - peaks[latents[0]]
                note += f"; {grew:+.0f} MB vs latent {latents[0]} (a [B,B,D] kernel: +{naive:.0f} MB)"
            self.table.add("memory", f"InfoVAE latent {latent}, batch {BATCH}, peak{tag}", f"{peaks[latent]:.0f} MB",
                           reference=f"B^2 x D x 4 B = {naive:.0f} MB", note=note)
        self.raw[f"memory_{device}"] = peaks


def child(args: argparse.Namespace) -> None:
    """--child epochs MODELS LATENT | --child naive LATENTS 0: measured in this fresh process; one JSON line."""
    kind, what, arg = args.child
    torch.set_num_threads(os.cpu_count() or 1)
    bench = Bench(args, args.tmp)
    bench.load()
    if kind == "epochs":  # ARG: latent, or latent/threads
        latent, _, threads = arg.partition("/")
        out = {m: bench.paired(m, int(latent), torch.device("cpu"), threads=int(threads) if threads else None)
               for m in what.split(",")}
    else:
        out = {latent: bench.naive_epochs(int(latent)) for latent in what.split(",")}
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="latent 100 only, 2 repeats, small sweep data")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs / runs per figure (default 3; quick 2)")
    parser.add_argument("--only", default="", help="comma-separated sections: epochs,naive,optin,omp,run,sweep,memory "
                                                   "(data always runs)")
    parser.add_argument("--json", type=Path, help="also write every raw timing here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 3)
    if args.child:
        return child(args)
    only = set(filter(None, args.only.split(",")))

    def wanted(section: str) -> bool:
        return not only or section in only

    sys.path.insert(0, str(BENCH_DIR))
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)  # as one vaebench run on this machine
    latents = (100,) if args.quick else LATENTS
    cuda = torch.device("cuda") if torch.cuda.is_available() else None
    started, load_before = time.time(), os.getloadavg()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"vaebench bench {'(quick) ' if args.quick else ''}{stamp}: {platform.node()}, {cores} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY') or 'unset'}, cuda {torch.cuda.get_device_name(0) if cuda else 'none'}; "
          f"load average {load_before[0]:.1f}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="vaebench-bench-"))
    os.environ["VAEBENCH_CACHE"] = str(tmp / "cache")  # every run below uses the bench's own cache
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")  # trainer.compile rows compile from cold
    bench = Bench(args, tmp)
    try:
        bench.data()  # always: every other section trains on this matrix
        if wanted("epochs"):
            bench.epochs(torch.device("cpu"), latents, one_thread=(100,))
        if wanted("naive"):
            bench.naive(latents)
        if wanted("optin") and not args.quick:
            bench.opt_in(torch.device("cpu"), 100)
        if wanted("omp") and cores > 1:
            bench.omp(("vae",), 100)
        if wanted("run"):
            bench.one_run("cpu")
        if wanted("sweep"):
            bench.sweep("cpu", ((1, ""), (2, ""), (1, "PASSIVE")) if cores >= 2 else ((1, ""),))
        if wanted("memory"):
            bench.memory("cpu", (200,) if args.quick else (10, 200))
        if cuda is not None:
            if wanted("epochs"):
                bench.epochs(cuda, latents)
            if wanted("optin"):
                bench.opt_in(cuda, 100)
            if wanted("run"):
                bench.one_run("cuda")
            if wanted("sweep"):
                bench.sweep("cuda", ((torch.cuda.device_count(), ""),))
            if wanted("memory"):
                bench.memory("cuda", (200,))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    load_after = os.getloadavg()
    header = (f"`{' '.join(['make bench'] + (['QUICK=1'] if args.quick else []))}` on {stamp}: {platform.node()}, "
              f"{cores} cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
              f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY') or 'unset'}, "
              f"cuda {torch.cuda.get_device_name(0) if cuda else 'none'}; "
              f"load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end; "
              f"{(time.time() - started) / 60:.1f} min")
    text = header + "\n\n" + bench.table.markdown()
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": bench.table.rows, "raw": bench.raw}, indent=1,
                                        default=str))


if __name__ == "__main__":
    main()

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
  nll       the held-out likelihood (val_nll_is, K draws per row) against the default run it scores
  smallepoch  the epoch at TCGA-11's size (1,204 x 3,341, batch 100: 11 steps) with one thread, against its floor
  efficiency  a 16-job sweep at TCGA-11's size under the default objective on 2 workers: the epochs' share of
            the workers' time, command start to the first epoch, and each part of a job's fixed cost
  startup   `vaebench --help`, `--cfg job` and a misspelt key, `vaebench-aggregate --help`, `vaebench-embed
            --help`: a fresh process each, no training; and the floor of any process that trains: a fresh Python
            importing torch and the loop
  omp       the latent-100 epochs again in fresh processes, with the OpenMP runtime's default wait policy
            and with OMP_WAIT_POLICY=PASSIVE (idle threads sleep instead of spinning): on a shared
            machine a spinning thread loses its core and every parallel region waits for it
On a machine with CUDA the epochs (also with trainer.compile / trainer.amp / trainer.cuda_graphs), a run and
the sweep with 1, 2, 4 and 8 jobs per GPU are measured on the GPU too. Timings on a shared machine are noisy: medians of repeats, and ratios within
pairs; never assert them in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import vaebench  # noqa: F401 - before torch: whatever the package sets up before torch loads holds here too
import torch

from common import LATENTS, Context, load
from vaebench.device import cpu_has_bf16, device_name
from epochs import epochs, naive, naive_epochs, omp, opt_in, paired
from efficiency import efficiency, small_epoch
from processes import data, likelihood, memory, one_run, sweep
from startup import startup


def child(args: argparse.Namespace) -> None:
    """--child epochs MODELS LATENT | --child naive LATENTS 0: measured in this fresh process; one JSON line."""
    kind, what, arg = args.child
    torch.set_num_threads(os.cpu_count() or 1)
    ctx = Context(args, args.tmp)
    load(ctx)
    if kind == "epochs":  # ARG: latent, or latent/threads
        latent, _, threads = arg.partition("/")
        out = {m: paired(ctx, m, int(latent), torch.device("cpu"), threads=int(threads) if threads else None)
               for m in what.split(",")}
    else:
        out = {latent: naive_epochs(ctx, int(latent)) for latent in what.split(",")}
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="latent 100 only, 2 repeats, small sweep data")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs / runs per figure (default 3; quick 2)")
    parser.add_argument("--only", default="", help="comma-separated sections: epochs,smallepoch,naive,optin,omp,run,sweep,"
                                                   "efficiency,memory,nll,startup "
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

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)  # as one vaebench run on this machine
    latents = (100,) if args.quick else LATENTS
    cuda = torch.device("cuda") if torch.cuda.is_available() else None
    started, load_before = time.time(), os.getloadavg()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # The host's CPU model can change between runs on a cloud VM (AVX-512 one day, AVX2 the next: amp's epoch
    # 0.8x then 36x float32's): every table names it, with torch's vector ISA and whether oneDNN has bf16 kernels.
    cpu = (f"{device_name(torch.device('cpu'))}, {torch.backends.cpu.get_cpu_capability()}, bf16 "
           f"{'kernels' if cpu_has_bf16() else 'emulated'}")
    print(f"vaebench bench {'(quick) ' if args.quick else ''}{stamp}: {platform.node()}, {cores} cores ({cpu}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY') or 'unset'}, cuda {torch.cuda.get_device_name(0) if cuda else 'none'}; "
          f"load average {load_before[0]:.1f}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="vaebench-bench-"))
    os.environ["VAEBENCH_CACHE"] = str(tmp / "cache")  # every run below uses the bench's own cache
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")  # trainer.compile rows compile from cold
    ctx = Context(args, tmp)
    try:
        data(ctx)  # always: every other section trains on this matrix
        if wanted("epochs"):
            epochs(ctx, torch.device("cpu"), latents, one_thread=(100,))
        if wanted("smallepoch"):
            small_epoch(ctx)
        if wanted("naive"):
            naive(ctx, latents)
        if wanted("optin") and not args.quick:
            opt_in(ctx, torch.device("cpu"), 100)
        if wanted("omp") and cores > 1:
            omp(ctx, ("vae",), 100)
        if wanted("run"):
            one_run(ctx, "cpu")
        if wanted("sweep"):
            sweep(ctx, "cpu", ((1, ""), (2, ""), (1, "PASSIVE")) if cores >= 2 else ((1, ""),))
        if wanted("efficiency"):
            efficiency(ctx)
        if wanted("memory"):
            memory(ctx, "cpu", (200,) if args.quick else (10, 200))
        if wanted("nll"):
            likelihood(ctx)
        if wanted("startup"):
            startup(ctx)
        if cuda is not None:
            if wanted("epochs"):
                epochs(ctx, cuda, latents)
            if wanted("optin"):
                opt_in(ctx, cuda, 100)
            if wanted("run"):
                one_run(ctx, "cuda")
            if wanted("sweep"):  # 1, 2, 4, 8 jobs per GPU (jobs_per_gpu), 48 runs so that 8 x GPUs have work
                sweep(ctx, "cuda", (), per_gpu=(1, 2, 4, 8), seeds=4)
            if wanted("memory"):
                memory(ctx, "cuda", (200,))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    load_after = os.getloadavg()
    header = (f"`{' '.join(['make bench'] + (['QUICK=1'] if args.quick else []))}` on {stamp}: {platform.node()}, "
              f"{cores} cores ({cpu}), torch {torch.__version__}, "
              f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY') or 'unset'}, "
              f"cuda {torch.cuda.get_device_name(0) if cuda else 'none'}; "
              f"load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end; "
              f"{(time.time() - started) / 60:.1f} min")
    text = header + "\n\n" + ctx.table.markdown()
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": ctx.table.rows, "raw": ctx.raw}, indent=1,
                                        default=str))


if __name__ == "__main__":
    main()

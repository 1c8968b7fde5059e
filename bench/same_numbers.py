"""Check that a change to the loop or the models changes no numbers: record, change, record, compare.

    .venv/bin/python bench/same_numbers.py record before.json     # on the old code
    .venv/bin/python bench/same_numbers.py record after.json      # on the new code
    .venv/bin/python bench/same_numbers.py compare before.json after.json [--rtol 0]

`record` trains a grid of 30 small configurations (every model and loss mode, both InfoVAE kernels, the
three optimizers, weight decay, gradient clipping, drop_last; two data sizes; 3 epochs each, 2 torch
threads) and writes every epoch's history (timings aside) and a checksum of the final weights.
`compare` exits 1 on any difference beyond --rtol (default 0: the same bits). Add overrides after the
file name to record an opt-in mode (`record amp.json trainer.amp=true`) and compare it with a tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

GRID = [[f"model={m}", f"model.loss_mode={mode}"] for m in ("vae", "iwae", "infovae", "logcosh")
        for mode in ("paper", "corrected")] + [
    ["model=infovae", "model.kernel=rbf"], ["model=infovae", "model.kernel=rbf", "model.loss_mode=corrected"],
    ["model=vae", "optimizer=sgd"], ["model=iwae", "optimizer=rmsprop"], ["model=vae", "model.grad_clip=0.5"],
    ["model=logcosh", "optimizer.weight_decay=0.01"], ["model=vae", "trainer.drop_last=true"]]
SIZES = [["data.n_samples=240", "data.n_genes=40", "trainer.batch_size=64"],
         ["data.n_samples=1500", "data.n_genes=300", "trainer.batch_size=256", "latent_dim=30"]]


def record(out: Path, extra: list[str]) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import compose_config
    from vaebench.data import load_dataset
    from vaebench.data.split import split_indices
    from vaebench.train import fit

    torch.set_num_threads(2)  # reductions split by thread count: compare recordings made alike
    cache = tempfile.mkdtemp(prefix="vaebench-same-numbers-")
    runs = {}
    for size in SIZES:
        for grid in GRID:
            overrides = [*size, *grid, "trainer.max_epochs=3", "trainer.rel_tol=0", "device=cpu",
                         f"data.cache_dir={cache}", *extra]
            cfg = compose_config(*overrides)
            data = load_dataset(cfg.data, cfg.trainer.val_fraction, cfg.seed)
            x = torch.tensor(np.asarray(data.x))
            train_idx, val_idx = split_indices(len(x), data.labels, cfg.trainer.val_fraction, cfg.seed)
            result = fit(cfg, x, train_idx, val_idx)
            weights = float(sum(p.double().sum() for p in result.model.state_dict().values() if p.is_floating_point()))
            runs[" ".join([*size, *grid])] = {
                "history": [{k: v for k, v in row.items() if k != "seconds"} for row in result.history],
                "weights": weights}
            print(f"{len(runs):2d} {' '.join(size[:2] + grid)}", flush=True)
    out.write_text(json.dumps(runs, indent=0))


def compare(a_path: Path, b_path: Path, rtol: float) -> int:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    bad, worst = 0, 0.0
    for key in a:
        if key not in b:
            print(f"missing in {b_path}: {key}")
            bad += 1
            continue
        rows_a = a[key]["history"] + [{"weights": a[key]["weights"]}]
        rows_b = b[key]["history"] + [{"weights": b[key]["weights"]}]
        if len(rows_a) != len(rows_b):
            print(f"{key}: {len(rows_a) - 1} vs {len(rows_b) - 1} epochs")
            bad += 1
        for ra, rb in zip(rows_a, rows_b):
            for name, va in ra.items():
                vb = rb.get(name)
                rel = abs(va - vb) / max(abs(va), 1e-30) if vb is not None else float("inf")
                worst = max(worst, rel)
                if rel > rtol:
                    bad += 1
                    if bad <= 10:
                        print(f"{key}: {name} {va!r} vs {vb!r}")
    print(f"{len(a)} configurations, {bad} differences, largest relative difference {worst:.3g}")
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("overrides", nargs="*")
    cmp = sub.add_parser("compare")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    cmp.add_argument("--rtol", type=float, default=0.0)
    args = parser.parse_args()
    if args.command == "record":
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")
        record(args.out, args.overrides)
    else:
        sys.exit(compare(args.a, args.b, args.rtol))


if __name__ == "__main__":
    main()

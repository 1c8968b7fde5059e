"""First load vs cached load of a samples x genes table the size of tybalt's TCGA matrix (11,000 x 5,000).

    .venv/bin/python bench/data_load.py              # plain .tsv, plus pandas' read_csv for comparison
    .venv/bin/python bench/data_load.py --gzip       # .tsv.gz, as tybalt ships its file

Writes a random float32 table into a temporary directory (removed at the end), then times
vaebench.data.load_dataset, each load in a fresh Python process as a new run would be (imports not
counted): the first load reads, checks, scales and caches; the loads after it memory-map the cache.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv


def write_table(path: Path, n_samples: int, n_genes: int, gz: bool) -> None:
    rng = np.random.default_rng(0)
    columns = [pa.array([f"TCGA-{i:05d}" for i in range(n_samples)])]
    columns += [pa.array(rng.random(n_samples, dtype=np.float32)) for _ in range(n_genes)]
    names = ["sample_id"] + [f"GENE{j}" for j in range(n_genes)]
    plain = path.with_suffix("") if gz else path
    options = pacsv.WriteOptions(delimiter="\t", quoting_style="none")
    pacsv.write_csv(pa.table(columns, names=names), str(plain), options)
    if gz:  # level 1: arrow's own gzip stream takes minutes for this table; the level does not change reading
        with open(plain, "rb") as f, gzip.open(path, "wb", compresslevel=1) as out:
            shutil.copyfileobj(f, out, 1 << 22)
        plain.unlink()


def timed_load(path: Path, cache: Path, *extra: str) -> dict:
    """One load in a fresh process: what a new vaebench run pays."""
    out = subprocess.run([sys.executable, __file__, "--load", str(path), str(cache), *extra], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def load_once(path: str, cache: str, scaler_fit: str) -> None:
    from vaebench.data import load_dataset
    from vaebench.data.config import ScalerFit, TableDataConfig

    import vaebench.data.prepare  # noqa: F401 - imports (pyarrow; torch for scaler_fit=train) are not load time
    import vaebench.train  # noqa: F401

    cfg = TableDataConfig(path=path, cache_dir=cache, scaler_fit=ScalerFit(scaler_fit))
    started = time.perf_counter()
    data = load_dataset(cfg, val_fraction=0.1, seed=0)
    seconds = time.perf_counter() - started
    np.array(data.x)  # what a run does next (a copy into a torch tensor): reads every page of the map
    in_memory = time.perf_counter() - started
    print(json.dumps({"seconds": round(seconds, 3), "in_memory": round(in_memory, 3), "shape": list(data.shape),
                      "memmap": isinstance(data.x, np.memmap)}))


def pandas_read(path: str) -> None:
    import pandas as pd

    started = time.perf_counter()
    frame = pd.read_csv(path, sep="\t", engine="pyarrow", index_col=0)
    values = frame.to_numpy(dtype=np.float64)
    print(json.dumps({"seconds": round(time.perf_counter() - started, 3), "shape": list(values.shape)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=11000)
    parser.add_argument("--genes", type=int, default=5000)
    parser.add_argument("--gzip", action="store_true", help="write and read .tsv.gz")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas read_csv comparison")
    parser.add_argument("--load", nargs=2, metavar=("PATH", "CACHE"), help=argparse.SUPPRESS)
    parser.add_argument("--scaler-fit", default="all", help=argparse.SUPPRESS)
    parser.add_argument("--pandas-read", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        return load_once(*args.load, args.scaler_fit)
    if args.pandas_read:
        return pandas_read(args.pandas_read)

    with tempfile.TemporaryDirectory(prefix="vaebench-bench-") as tmp:
        path, cache = Path(tmp) / ("table.tsv.gz" if args.gzip else "table.tsv"), Path(tmp) / "cache"
        started = time.perf_counter()
        write_table(path, args.samples, args.genes, args.gzip)
        print(f"wrote {args.samples} x {args.genes} table: {path.name}, {path.stat().st_size / 1e6:.0f} MB "
              f"({time.perf_counter() - started:.1f} s); {os.cpu_count()} CPU cores")
        first = timed_load(path, cache)
        cached = [timed_load(path, cache) for _ in range(3)]
        print(f"first load (read + prepare + write cache): {first['seconds']:.2f} s  shape {first['shape']}")
        print(f"cached load (memory-mapped={cached[0]['memmap']}): "
              + ", ".join(f"{c['seconds']:.3f}" for c in cached) + " s; with a copy of the matrix into memory: "
              + ", ".join(f"{c['in_memory']:.3f}" for c in cached) + " s")
        timed_load(path, cache, "--scaler-fit", "train")  # builds the unscaled entry
        train = [timed_load(path, cache, "--scaler-fit", "train") for _ in range(3)]
        print("cached load with data.scaler_fit=train (copy + scale on the split): "
              + ", ".join(f"{t['seconds']:.3f}" for t in train) + " s")
        if not args.no_pandas:
            out = subprocess.run([sys.executable, __file__, "--pandas-read", str(path)], check=True,
                                 capture_output=True, text=True)
            print(f"for comparison, pandas.read_csv(engine='pyarrow') + to_numpy alone: "
                  f"{json.loads(out.stdout.splitlines()[-1])['seconds']:.2f} s")


if __name__ == "__main__":
    main()

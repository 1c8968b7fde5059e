"""Is an epoch slower than it was at another commit? Steady epoch times of REF and of this checkout, side by side.

    .venv/bin/python bench/ab_epochs.py REF [--models vae,iwae] [--latent 100] [--epochs 4] [--rounds 3]

REF's vaebench/ and conf/ are exported with `git archive` into a temporary directory and run with this
checkout's virtual environment (same torch, same packages), so the only difference is vaebench's own code.
Each round runs one `vaebench` process per model and side, alternating which side goes first, on the
built-in 11,000 x 5,000 matrix at the study's batch size, with the stopping rule off (trainer.rel_tol=0).
An epoch's time is the loop's own per-epoch `seconds` in metrics.csv (training, validation, checks; the
run's fixed cost and its one-off baselines are not in it); the first epoch of each run is dropped as
warm-up. The ratio is this checkout's median over REF's: processes of the two sides take turns, so load
from other processes falls on both alike. It asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = "import sys; from vaebench.cli import main; sys.argv[0] = 'vaebench'; main()"


def export(ref: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "vaebench", "conf"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def epoch_seconds(tree: Path, model: str, latent: int, epochs: int, work: Path, cache: Path) -> list[float]:
    """Per-epoch seconds of one `vaebench` run whose code is `tree`'s, first epoch dropped."""
    run_dir = Path(tempfile.mkdtemp(dir=work))
    env = {**os.environ, "PYTHONPATH": str(tree), "VAEBENCH_CACHE": str(cache)}
    cmd = [sys.executable, "-c", RUN, f"model={model}", f"latent_dim={latent}", f"trainer.max_epochs={epochs}",
           "trainer.rel_tol=0", "trainer.latent_metrics=false", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree.name} {model}: vaebench failed:\n{done.stderr[-2000:]}")
    with open(run_dir / "metrics.csv") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help="the commit to compare with (e.g. a tag or a hash)")
    parser.add_argument("--models", default="vae,iwae,infovae,logcosh")
    parser.add_argument("--latent", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is dropped)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vaebench-ab-") as tmp:
        tmp_path = Path(tmp)
        sides = {args.ref: tmp_path / "ref", "this checkout": REPO}
        sides[args.ref].mkdir()
        export(args.ref, sides[args.ref])
        times: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for model in args.models.split(","):
                for side in order:
                    cache = tmp_path / f"cache-{'ref' if side == args.ref else 'head'}"
                    times.setdefault((model, side), []).extend(
                        epoch_seconds(sides[side], model, args.latent, args.epochs, tmp_path, cache))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(f"| model, latent {args.latent} | {args.ref} s/epoch | this checkout s/epoch | ratio |")
    print("|---|---|---|---|")
    for model in args.models.split(","):
        ref, head = (statistics.median(times[(model, side)]) for side in sides)
        print(f"| {model} | {ref:.3f} | {head:.3f} | {head / ref:.2f}x |")
    print(f"\n{args.rounds} rounds x {args.epochs - 1} steady epochs per side; medians; "
          f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}")


if __name__ == "__main__":
    main()

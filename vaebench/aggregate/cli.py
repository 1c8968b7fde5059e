"""`vaebench-aggregate PATH...`: the command's arguments and exit statuses. Only argparse here: `--help` and a bad
argument answer at once; the steps (vaebench.aggregate.pipeline) load with the data libraries they need."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from vaebench.errors import UserError

PROG = "vaebench-aggregate"
FORMATS = ("png", "svg", "pdf")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every vaebench user error, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = _Parser(prog=PROG, description="Collect every result.json below PATH... into results.csv, draw the "
                     "study's dot-plots (one figure per model and an overview) and write report.md, which says "
                     "how much each hyper-parameter matters per model.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="run or sweep directories (searched at any depth), result.json files, or a results.csv an earlier "
                        "vaebench-aggregate wrote (its rows are taken as they are)")
    parser.add_argument("--out", type=Path, help="output directory (default: <first PATH>/aggregate)")
    parser.add_argument("--metric", help="numeric result field to compare (default: recon_vs_mean, the ratio to "
                        "the mean predictor, when every successful run recorded it, else val_recon_mse); lower is "
                        "better, except for the latent-space scores latent_ari, latent_nmi, latent_silhouette, "
                        "latent_probe_balanced_accuracy and active_units")
    parser.add_argument("--format", default="png", help="figure formats, comma-separated from png,svg,pdf "
                        "(default: png)")
    args = parser.parse_args(argv)
    args.formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    bad = [f for f in args.formats if f not in FORMATS]
    if bad or not args.formats:
        parser.error(f"--format {args.format}: use one or more of {','.join(FORMATS)}")
    first = args.paths[0]
    args.out = args.out or ((first if first.is_dir() else first.parent) / "aggregate")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; --out names a directory (created when missing)")
    return args


def require_paths(paths: Sequence[Path]) -> None:
    """UserError for the first path that is not there."""
    for p in paths:
        if not p.exists():
            raise UserError(f"no such file or directory: {p}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        require_paths(args.paths)  # before the steps load their libraries: a mistyped path answers at once
        from vaebench.aggregate.pipeline import aggregate

        aggregate(args.paths, args.out, args.metric, args.formats)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a read-only or full output directory: one line, as for every output vaebench writes
        where = f": {e.filename}" if e.filename else ""
        print(f"{PROG}: error: cannot write the aggregate ({e.strerror or e}{where}); choose another --out",
              file=sys.stderr)
        sys.exit(2)


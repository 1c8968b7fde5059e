"""`python -m vaebench.learned SWEEP_DIR...`: one line per sweep saying whether its models learned, against
the per-gene-mean baseline (make demo's closing lines: the study's objective beside the ELBO)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from vaebench.results import RESULT_FILE, F, read_result


def summary(sweep_dir: Path) -> str:
    results = [r for r in (read_result(p.parent) for p in sorted(sweep_dir.rglob(RESULT_FILE))) if r]
    ok = [r for r in results if r[F.status] == "ok" and r.get(F.recon_vs_mean) is not None]
    if not ok:
        return f"{sweep_dir}: no successful run with baselines"
    learned = sum(r[F.recon_vs_mean] <= 0.95 for r in ok)
    collapsed = sum(bool(r.get(F.collapsed)) for r in ok)
    best = min(r[F.recon_vs_mean] for r in ok)
    units = statistics.median(r[F.active_units] or 0 for r in ok)
    mode = ok[0][F.loss_mode]
    return (f"{sweep_dir} ({mode}): {learned} of {len(ok)} successful runs beat the per-gene-mean predictor by "
            f">= 5 %, {collapsed} collapsed; best {best:.2f}x the mean predictor; median active units {units:g}")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    for path in argv:
        print(summary(Path(path)))


if __name__ == "__main__":
    main(sys.argv[1:])

"""`vaebench-embed MODEL MATRIX`: the latent posterior of every sample of a new matrix under a saved model.

MODEL is a run directory holding model.pt (trainer.save_model) or the file itself. MATRIX is read and prepared
as the model's training data was (vaebench.data.prepare.prepare_like): the same layout (a samples x genes
table, a Xena genes x samples matrix, an .h5ad), NaN policy and log1p, the model's genes in its order, each
gene scaled with the training matrix's minimum and maximum. Writes the table latent.csv has (sample_id,
mu_1 ..., log_var_1 ...), or an .h5ad with the posterior in obsm when --out ends in .h5ad.

Exit status 0, or 2 with one line for what the user can fix: no model, a file that is no model, a matrix
that lacks a gene of the model or that cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from vaebench.artifact_files import MODEL_FILE
from vaebench.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

PROG = "vaebench-embed"


def embed(model_path: Path, matrix: str, out: Path) -> pd.DataFrame:
    """The whole command; the table it wrote. UserError for what the user can fix."""
    import torch  # here, not at the top: --help and a bad argument answer without torch (2.5 s)

    from vaebench.artifacts import NotAModel, latent_frame, load_model, write_csv, write_h5ad
    from vaebench.data.files import Source
    from vaebench.data.prepare import prepare_like
    from vaebench.latent import posterior

    if model_path.is_dir():
        model_path = model_path / MODEL_FILE
    if not model_path.is_file():
        raise UserError(f"no saved model at {model_path}; train with trainer.save_model=true (a single run saves "
                        f"one by default) and give its run directory or its {MODEL_FILE}")
    try:
        model, saved = load_model(model_path)
    except NotAModel as e:
        raise UserError(f"{model_path} {e}; give a {MODEL_FILE} that vaebench wrote") from None
    x, sample_ids = prepare_like(saved["preparation"], Source.open(matrix, "matrix file", "MATRIX"))
    mu, log_var = posterior(model, torch.from_numpy(x), saved["batch_size"])
    frame = latent_frame(sample_ids, mu, log_var)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        (write_h5ad(frame, mu, log_var, out) if out.suffix == ".h5ad" else write_csv(frame, out))
    except OSError as e:
        raise UserError(f"cannot write {out} ({e.strerror or e}); choose another --out") from None
    return frame


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every vaebench user error
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = _Parser(prog=PROG, description="Embed a new matrix with a saved vaebench model: the latent mean and "
                     "log-variance of every sample, as a CSV table (or .h5ad). The matrix is prepared as the "
                     "model's training data was: same layout, the model's genes by name, the same scaling.")
    parser.add_argument("model", type=Path, metavar="MODEL", help=f"a run directory holding {MODEL_FILE}, or the file")
    parser.add_argument("matrix", metavar="MATRIX", help="the new expression matrix, in the training data's layout")
    parser.add_argument("--out", type=Path, help="output file, .csv or .h5ad (default: <MATRIX name>.latent.csv in "
                        "the current directory)")
    args = parser.parse_args(argv)
    args.out = args.out or Path(Path(args.matrix).name.split(".")[0] + ".latent.csv")
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        frame = embed(args.model, args.matrix, args.out)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(2)
    k = sum(c.startswith("mu_") for c in frame.columns)
    print(f"{PROG}: wrote the latent means and log-variances ({k} dims) of {len(frame)} samples to {args.out}")

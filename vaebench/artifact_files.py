"""What a run saves beside result.json and whether it is there, free of torch: vaebench.artifacts writes and
reads the files; a resumed job decides from these alone that it has nothing to do (vaebench.resume)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaebench.results import RESULT_FILE

MODEL_FILE = "model.pt"
LATENT_FILE = "latent.csv"
LATENT_H5AD = "latent.h5ad"


@dataclass(frozen=True)
class Wanted:
    model: bool
    latent: bool


def wanted(trainer: Any, multirun: bool) -> Wanted:
    """The one place that decides what a run saves: trainer.save_model / trainer.save_latent when set; else
    both for a single run (one model, to take away) and neither in a sweep (hundreds of models nobody asked
    for). multirun: Hydra's -m, as vaebench.cli knows it."""
    return Wanted(model=not multirun if trainer.save_model is None else trainer.save_model,
                  latent=not multirun if trainer.save_latent is None else trainer.save_latent)


def anndata_input(data_cfg: Any) -> bool:
    """The data came from an .h5ad file: the latent posterior is written as .h5ad too."""
    return data_cfg.name == "h5ad"


def files(out_dir: Path, wants: Wanted, h5ad: bool) -> list[Path]:
    """The artifact files a run with these wishes writes (h5ad: its data came from an .h5ad file)."""
    names = ([MODEL_FILE] if wants.model else []) + ([LATENT_FILE] if wants.latent else []) + (
        [LATENT_H5AD] if wants.latent and h5ad else [])
    return [out_dir / name for name in names]


def present(out_dir: Path, wants: Wanted, h5ad: bool) -> bool:
    """Every artifact asked for is there: a resumed run that lacks one trains again to write it."""
    return all(p.is_file() for p in files(out_dir, wants, h5ad))


def where(out_dir: Path) -> str:
    """The single run's last line: where its files are."""
    names = [n for n in (RESULT_FILE, MODEL_FILE, LATENT_FILE, LATENT_H5AD) if (out_dir / n).is_file()]
    return f"vaebench: wrote {', '.join(names)} in {out_dir}" if names else f"vaebench: nothing written in {out_dir}"

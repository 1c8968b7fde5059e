"""Why the study's stopping rule ends paper-mode runs after a few epochs here where the study reports 12-28:
the same VAE (Adam, lr 1e-3, latent 20) under one change at a time, three seeds each, as a markdown table.

    .venv/bin/python docs/stopping_epochs.py DATA_DIR     # DATA_DIR holds tcga11_paired_metagsca.{tsv.gz,labels.tsv}

The variants: the study's settings on TCGA-11; the validation KL weight equal to the training one (the
study used batch / N_val in validation: 8.3 here, 0.9 at its 11,000 samples); ~10 optimizer steps per
epoch as the study had (batch 100); the built-in data at the study's size (11,000 x 5,000, batch 1000: the
study's KL weights and steps per epoch); and the ELBO objective with the patience rule, for contrast.
Quoted in docs/study-tcga11.md.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from vaebench.cli import conf_dir
from vaebench.config import register_configs
from vaebench.task import run

SEEDS = (0, 1, 2)


def variants(data_dir: Path) -> list[tuple[str, list[str]]]:
    tcga = ["data=table", f"data.path={data_dir / 'tcga11_paired_metagsca.tsv.gz'}",
            f"data.labels_path={data_dir / 'tcga11_paired_metagsca.labels.tsv'}", "data.label_column=cohort",
            "data.n_genes=5000", "data.scaling=zeroone", "data.split_seed=0"]
    return [
        ("TCGA-11, the study's settings (KL weight 0.92 train / 8.3 validation, 2 steps an epoch)", tcga),
        ("TCGA-11, validation KL weight = training's (0.92)", [*tcga, "model.kld_weight=0.9225"]),
        ("TCGA-11, batch 100: 11 steps an epoch (KL weight 0.092 / 0.83)", [*tcga, "trainer.batch_size=100"]),
        ("built-in 11,000 x 5,000, batch 1000: the study's size (KL weight 0.10 / 0.91, 10 steps)",
         ["data.n_samples=11000", "data.n_genes=5000"]),
        ("TCGA-11, ELBO, patience 10, batch 100 (the rerun's settings)",
         [*tcga, "model.loss_mode=elbo", "trainer.stopping=patience", "trainer.batch_size=100"]),
    ]


def main(data_dir: str) -> None:
    register_configs()
    print("| setting | epochs run (3 seeds) | val MSE / mean predictor | active units |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        for name, overrides in variants(Path(data_dir).resolve()):
            results = []
            for seed in SEEDS:
                cfg = compose(config_name="config", overrides=[*overrides, "model=vae", "optimizer=adam", "lr=1e-3",
                                                               "latent_dim=20", f"seed={seed}", "device=cpu",
                                                               "trainer.latent_metrics=false"])
                results.append(run(cfg, Path(out) / f"{len(results)}-{hash(name)}"))
            epochs = ", ".join(str(r["epochs_run"]) for r in results)
            ratio = statistics.median(r["recon_vs_mean"] for r in results)
            units = statistics.median(r["active_units"] for r in results)
            print(f"| {name} | {epochs} | {ratio:.2f} | {units:g} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

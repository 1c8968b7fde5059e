"""Checks of a job's data against its config that need the data itself: run by the task before training
and, for every distinct data set of a sweep, before any job starts (a bad file among swept data.path
values, or a batch size that leaves no batch, used to surface only once jobs were running)."""

from __future__ import annotations

import logging

from vaebench.config import Config, TrainerConfig
from vaebench.data import Dataset, load_dataset
from vaebench.data.split import Split, run_split, split_seed
from vaebench.errors import UserError

log = logging.getLogger(__name__)


def require_split(n: int, n_train: int, n_val: int, n_test: int = 0) -> None:
    if n_train < 2 or n_val < 2:
        raise UserError(f"data: {n} samples give {n_train} training and {n_val} validation rows; each needs "
                        f"at least 2 (use more samples or change trainer.val_fraction)")
    if 0 < n_test < 2:  # 0: no test split (data.test_fraction=0); else at least one row is held out
        raise UserError(f"data: {n} samples give {n_test} test rows with data.test_fraction > 0; a test split "
                        f"needs at least 2 (use more samples, a larger data.test_fraction, or 0 for none)")


def require_training_batch(n_train: int, trainer: TrainerConfig) -> None:
    if trainer.drop_last and n_train < trainer.batch_for(n_train):
        raise UserError(f"config key 'trainer.drop_last': {n_train} training rows make no full batch of "
                        f"trainer.batch_size={trainer.batch_size}; set trainer.drop_last=false or a smaller batch size")


LATENT_PER_GENE = 10  # a latent code more than this many times wider than the genes is refused as absurd


def require_latent_size(latent_dim: int, n_genes: int, n_train: int) -> None:
    """A latent code many times wider than the genes summarises nothing and costs minutes of scoring
    (latent_dim=100000 on 200 genes): refused. One as wide as the genes, or the training rows, leaves the PCA
    baseline without a k to reduce to: said in one warning (and in each result's pca_note)."""
    if latent_dim > LATENT_PER_GENE * n_genes:
        raise UserError(f"config key 'latent_dim': {latent_dim} is more than {LATENT_PER_GENE} times the {n_genes} "
                        f"genes of the data; a latent code that wide does not summarise them: use latent_dim <= "
                        f"{n_genes} (at most {LATENT_PER_GENE * n_genes})")
    if latent_dim >= min(n_genes, n_train):
        log.warning("latent_dim=%d is not below the %d genes and %d training rows: the PCA baseline "
                    "(baseline_pca_mse, recon_vs_pca, latent_*_pca) is null", latent_dim, n_genes, n_train)


def checked_data(cfg: Config) -> tuple[Dataset, Split]:
    """The job's data and its split, loaded as the job uses them (UserError for a bad file, or a split that
    cannot train: a user's mistake, not a result). The task trains on them; a sweep's check before any job
    loads them once per distinct data set, which also warms the cache for the workers."""
    data = load_dataset(cfg.data, cfg.trainer.val_fraction, split_seed(cfg))  # the split, for scaler_fit=train
    split = run_split(cfg, len(data.x), data.labels)
    require_split(len(data.x), len(split.train), len(split.val), len(split.test))
    require_training_batch(len(split.train), cfg.trainer)
    require_latent_size(cfg.latent_dim, data.x.shape[1], len(split.train))
    return data, split

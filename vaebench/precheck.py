"""Checks of a job's data against its config that need the data itself: run by the task before training
and, for every distinct data set of a sweep, before any job starts (a bad file among swept data.path
values, or a batch size that leaves no batch, used to surface only once jobs were running)."""

from __future__ import annotations

from vaebench.config import Config, TrainerConfig
from vaebench.data import load_dataset
from vaebench.data.split import split_indices, split_seed
from vaebench.errors import UserError


def require_split(n: int, n_train: int, n_val: int) -> None:
    if n_train < 2 or n_val < 2:
        raise UserError(f"data: {n} samples give {n_train} training and {n_val} validation rows; each needs "
                        f"at least 2 (use more samples or change trainer.val_fraction)")


def require_training_batch(n_train: int, trainer: TrainerConfig) -> None:
    if trainer.drop_last and n_train < trainer.batch_size:
        raise UserError(f"config key 'trainer.drop_last': {n_train} training rows make no full batch of "
                        f"trainer.batch_size={trainer.batch_size}; set trainer.drop_last=false or a smaller batch size")


def check_data(cfg: Config) -> None:
    """Load the data as the job will (UserError for a bad file; the cache is then warm for the workers)
    and check that its split trains."""
    data = load_dataset(cfg.data, cfg.trainer.val_fraction, split_seed(cfg))
    train_idx, val_idx = split_indices(len(data.x), data.labels, cfg.trainer.val_fraction, split_seed(cfg))
    require_split(len(data.x), len(train_idx), len(val_idx))
    require_training_batch(len(train_idx), cfg.trainer)

"""Checks of a job's data against its config that need the data itself: run by the task before training
and, for every distinct data set of a sweep, before any job starts (a bad file among swept data.path
values, or a batch size that leaves no batch, used to surface only once jobs were running)."""

from __future__ import annotations

from vaebench.config import Config, TrainerConfig
from vaebench.data import Dataset, load_dataset
from vaebench.data.split import Split, run_split, split_seed
from vaebench.errors import UserError


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


def checked_data(cfg: Config) -> tuple[Dataset, Split]:
    """The job's data and its split, loaded as the job uses them (UserError for a bad file, or a split that
    cannot train: a user's mistake, not a result). The task trains on them; a sweep's check before any job
    loads them once per distinct data set, which also warms the cache for the workers."""
    data = load_dataset(cfg.data, cfg.trainer.val_fraction, split_seed(cfg))  # the split, for scaler_fit=train
    split = run_split(cfg, len(data.x), data.labels)
    require_split(len(data.x), len(split.train), len(split.val), len(split.test))
    require_training_batch(len(split.train), cfg.trainer)
    return data, split

"""From a file named in data/ to a cached, prepared `Dataset`: read, check, fill NaN, log1p, keep the top
genes by MAD, scale each gene to [0, 1]. docs/data.md describes each step for users.

The cache key is the source file's identity (absolute path, size, modification time) plus every option
that changes the matrix, so an edited file or a changed setting makes a new entry. The fingerprint
recorded in results is a hash of the prepared matrix and its names: equal fingerprints mean equal
matrices, whatever file path or machine they came from.

With data.scaler_fit=train the cache holds the matrix before scaling (one entry whatever the split), and
each run scales its copy with the minimum and maximum of its own training split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from enum import Enum
from typing import Any, Optional

import numpy as np

from vaebench.data import Dataset, cache, files
from vaebench.data.config import FileDataConfig, Mad, NanPolicy, ScalerFit, Scaling
from vaebench.data.files import Matrix, Source
from vaebench.data.split import holdout_seed, split_rows

log = logging.getLogger(__name__)

PREPARATION_VERSION = 1  # bump when a step below changes its output
MIN_SAMPLES = 4  # a train/validation split with two training rows (BatchNorm) and one validation row
# Paths enter the key as file identities instead. The split's keys (split_seed, test_fraction) choose rows of the
# prepared matrix in each run, after the cache: the same file and preparation with data.test_fraction=0.2 wrote a
# second entry of the same fingerprint when they were in the key.
_NOT_IN_KEY = ("cache_dir", "path", "labels_path", "split_seed", "test_fraction")


def load(cfg: FileDataConfig, val_fraction: Optional[float] = None, seed: Optional[int] = None) -> Dataset:
    """The prepared matrix of cfg's file, from the cache when it is there; val_fraction and seed are the
    run's, needed by data.scaler_fit=train only."""
    src = Source.open(cfg.path, "data file", "data.path")
    labels_src = Source.open(cfg.labels_path, "labels file", "data.labels_path") if cfg.labels_path else None
    key = cache_key(cfg, src, labels_src)
    data = cache.load_or_build(cache.cache_root(cfg.cache_dir), key, lambda: build(cfg, src, labels_src, key))
    if data.preprocessing.get(UNLOGGED):  # every load, cached or not: the cache hides nothing
        log.warning("%s: looks like raw counts or expression not on a log scale (%s), but data.log1p is false; "
                    "set data.log1p=true (counts: normalise library sizes first, e.g. CPM; see docs/data.md)",
                    src.shown, data.preprocessing[UNLOGGED])
    if cfg.scaler_fit is ScalerFit.train and cfg.scaling is Scaling.zeroone:
        if val_fraction is None or seed is None:
            raise ValueError("data.scaler_fit=train needs the run's trainer.val_fraction and seed")
        data = scale_on_training_split(data, val_fraction, seed, cfg.test_fraction, holdout_seed(cfg))
    return data


def cache_key(cfg: FileDataConfig, src: Source, labels_src: Optional[Source]) -> str:
    options = {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in _NOT_IN_KEY}
    ident = {"version": PREPARATION_VERSION, "data": src.identity(), "options": options,
             "labels": labels_src.identity() if labels_src else None}
    return f"{cfg.name}-{hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]}"


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def read(cfg: FileDataConfig, src: Source) -> Matrix:
    if cfg.name == "xena":
        return files.read_xena(src, cfg.sample_id_length, cfg.sort_samples)
    if cfg.name == "h5ad":
        return files.read_h5ad(src, cfg.layer, None if cfg.labels_path else cfg.label_column)
    return files.read_table(src, None if cfg.labels_path else cfg.label_column)


def build(cfg: FileDataConfig, src: Source, labels_src: Optional[Source], key: str) -> Dataset:
    log.info("reading %s (%s)", src.shown, cfg.name)
    matrix = read(cfg, src)
    files.require_unique_names(src, matrix)
    if labels_src is not None:
        matrix.labels = files.read_labels(labels_src, cfg.label_column, matrix.sample_ids,
                                          getattr(cfg, "sample_id_length", None))
    n_samples, n_genes_in_file = matrix.values.shape
    if n_samples < MIN_SAMPLES:
        raise src.refuse(f"holds {n_samples} sample{'' if n_samples == 1 else 's'}",
                         f"a train/validation split needs at least {MIN_SAMPLES}")
    nan_replaced = fill_missing(matrix, cfg.nan_policy, src)
    unlogged = None if cfg.log1p else looks_unlogged(matrix.values)
    if cfg.log1p:
        apply_log1p(matrix, src)
    record: dict[str, Any] = {
        "source": cfg.name, "path": str(src.path), "file_size": src.size,
        "labels": ({"path": str(labels_src.path) if labels_src else None, "column": cfg.label_column}
                   if matrix.labels is not None else None),
        **matrix.notes, "n_samples": n_samples, "n_genes_in_file": n_genes_in_file,
        "nan_policy": cfg.nan_policy.value, "nan_replaced": nan_replaced, "log1p": cfg.log1p, UNLOGGED: unlogged,
    }
    x, genes = matrix.values, matrix.gene_names
    keep = top_genes_by_mad(x, cfg.n_genes, cfg.mad, src)
    if keep is not None:
        x, genes = x[:, keep], [genes[j] for j in keep]
    record["n_genes"] = len(genes)
    record["constant_genes"] = count_constant_genes(x, src)
    record["gene_selection"] = None if keep is None else f"top {len(genes)} by {cfg.mad.value} absolute deviation"
    record["scaling"] = cfg.scaling.value
    scaler = None
    if cfg.scaling is Scaling.zeroone:
        record["scaler_fit"] = cfg.scaler_fit.value
        if cfg.scaler_fit is ScalerFit.all:
            low, high = gene_range(x)
            x, scaler = zero_one(x, low, high), {"low": low, "high": high}
    else:
        require_unit_range(x, src)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return Dataset(x=x, sample_ids=matrix.sample_ids, gene_names=genes, labels=matrix.labels,
                   fingerprint=content_fingerprint(x, matrix.sample_ids, genes, matrix.labels),
                   preprocessing=record, scaler=scaler)


def _first(mask: np.ndarray, matrix: Matrix) -> str:
    i, j = divmod(int(np.argmax(mask.ravel(order="C"))), mask.shape[1])  # argmax stops at the first True
    return f"first at sample '{matrix.sample_ids[i]}', gene '{matrix.gene_names[j]}'"


def fill_missing(matrix: Matrix, policy: NanPolicy, src: Source) -> int:
    """Refuse Inf always and NaN unless policy is zero (then NaN -> 0, tybalt's fillna(0)); NaNs replaced."""
    x = matrix.values
    infinite = np.isinf(x)
    if infinite.any():
        raise src.refuse(f"{int(infinite.sum())} infinite values, {_first(infinite, matrix)}",
                         "an infinite value cannot be scaled: fix the file")
    missing = np.isnan(x)
    count = int(missing.sum())
    if count and policy is NanPolicy.error:
        raise src.refuse(f"{count} missing (NaN) values, {_first(missing, matrix)}",
                         "fix the file, or set data.nan_policy=zero to read them as 0 (as tybalt did)" if src.configured
                         else "fill them in the file: the model was trained with data.nan_policy=error, so its input "
                         "may hold no NaN")
    x[missing] = 0.0
    return count


UNLOGGED = "looks_unlogged"  # the preparation record's note: why the values look like counts, or null
LOG_SCALE_MAX = 50.0  # log2(count + 1) of any RNA-seq library stays below ~25; log1p below ~17
SAMPLED_VALUES = 1_000_000  # enough to measure shares and a median; a 11,000 x 20,000 matrix has 220 million


def looks_unlogged(x: np.ndarray) -> Optional[str]:
    """Why x looks like raw counts, RSEM/TPM or intensities not on a log scale, in words; None when it does not.

    Such values train a VAE on a handful of huge genes: min-max scaling squeezes every ordinary gene towards
    0. Telling signs: no negative value (log-scaled data often has some), a maximum far above what a log
    scale reaches, and either mostly whole numbers (counts) or a heavy right tail (the maximum a hundred
    times the median of the positive values or more, as in TPM)."""
    if x.size == 0 or float(x.min()) < 0:
        return None
    top = float(x.max())  # one pass over a matrix that may hold hundreds of millions of values
    if top <= LOG_SCALE_MAX:
        return None
    flat = x.ravel()
    sample = flat[::max(1, flat.size // SAMPLED_VALUES)]
    whole = float(np.mean(sample == np.round(sample)))
    positive = sample[sample > 0]
    tail = top / float(np.median(positive)) if positive.size else 0.0
    if whole < 0.9 and tail < 100:
        return None
    return f"max {top:.4g}, {whole:.0%} whole numbers, max {tail:.3g} x the median positive value"


def apply_log1p(matrix: Matrix, src: Source) -> None:
    x = matrix.values
    negative = x < 0
    if negative.any():
        raise src.refuse(f"data.log1p=true, but {int(negative.sum())} values are negative "
                         f"(min {x.min():.4g}), {_first(negative, matrix)}",
                         "log1p needs counts >= 0; negative values suggest the file is log-scaled already: "
                         "set data.log1p=false" if src.configured else "log1p needs counts >= 0: the model was trained "
                         "on counts (data.log1p=true), so give this matrix as counts too, not log-scaled")
    np.log1p(x, out=x)


def top_genes_by_mad(x: np.ndarray, n_genes: Optional[int], mad: Mad, src: Source) -> Optional[np.ndarray]:
    """Column indices of the n_genes largest-MAD genes, largest first (tybalt's order); None = keep all as is."""
    if n_genes is None or n_genes == x.shape[1]:
        return None
    if n_genes > x.shape[1]:
        log.warning("data.n_genes=%d, but %s has %d genes: using all of them", n_genes, src.shown, x.shape[1])
        return None
    if mad is Mad.median:
        score = np.median(np.abs(x - np.median(x, axis=0)), axis=0)
    else:  # pandas < 2's DataFrame.mad, as tybalt called it
        score = np.mean(np.abs(x - x.mean(axis=0)), axis=0)
    return np.argsort(-score, kind="stable")[:n_genes]


CONSTANT_SHARE_WARNED = 0.1


def count_constant_genes(x: np.ndarray, src: Source) -> int:
    """Refuse a matrix in which no gene varies (it trains to a perfect-looking, meaningless fit); warn when
    many genes are constant, as they scale to 0 and carry nothing."""
    low, high = gene_range(x)
    constant = int((low == high).sum())
    if constant == x.shape[1]:
        raise src.refuse(f"no gene varies: each of its {constant} kept genes has one value in every sample "
                         f"(min {float(low.min()):.4g}, max {float(high.max()):.4g})",
                         "check that the file holds the expression values (not an empty or all-zero export)")
    if constant >= CONSTANT_SHARE_WARNED * x.shape[1]:
        log.warning("%s: %d of %d genes are constant; they scale to 0 and teach the models nothing "
                    "(data.n_genes keeps the most variable genes)", src.shown, constant, x.shape[1])
    return constant


def gene_range(x: np.ndarray, rows: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Each gene's min and max over rows (default all); a block of rows at a time, so that fitting on a
    training split does not copy nine tenths of the matrix first."""
    if rows is None:
        return x.min(axis=0), x.max(axis=0)
    low, high = np.full(x.shape[1], np.inf, x.dtype), np.full(x.shape[1], -np.inf, x.dtype)
    for start in range(0, len(rows), 1024):
        block = x[rows[start:start + 1024]]
        np.minimum(low, block.min(axis=0), out=low)
        np.maximum(high, block.max(axis=0), out=high)
    return low, high


def zero_one(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """A new array: each gene min-max scaled with low and high, clipped to [0, 1]. The arithmetic is
    scikit-learn's MinMaxScaler (x * scale + min), so tybalt's values come out bit for bit."""
    span = high - low
    span[span == 0] = 1.0  # a constant gene becomes 0
    scale = (1.0 / span).astype(x.dtype)
    out = np.multiply(x, scale, dtype=x.dtype)  # x may be the cache's read-only memory map
    out -= (low * scale).astype(x.dtype)
    return np.clip(out, 0.0, 1.0, out=out)


def require_unit_range(x: np.ndarray, src: Source) -> None:
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise src.refuse(f"data.scaling=none, but its values run from {low:.4g} to {high:.4g}",
                         "the models need values in [0, 1]: set data.scaling=zeroone")


def content_fingerprint(x: np.ndarray, samples: list[str], genes: list[str], labels: Optional[list[str]]) -> str:
    """The same matrix, names and labels give the same fingerprint, whichever file or format they came from."""
    digest = hashlib.sha256(memoryview(np.ascontiguousarray(x)).cast("B"))
    digest.update(json.dumps([samples, genes, labels]).encode())
    return f"matrix-{digest.hexdigest()[:16]}"


def scale_on_training_split(data: Dataset, val_fraction: float, seed: int, test_fraction: float = 0.0,
                            test_seed: int = 0) -> Dataset:
    """The cached unscaled matrix, scaled with its training rows only: the split that vaebench.train makes
    for this val_fraction, seed and test split (same labels, same rows), so validation and test rows leak
    nothing into the scaler."""
    train_idx = split_rows(len(data.x), data.labels, val_fraction, seed, test_fraction, test_seed).train
    low, high = gene_range(data.x, train_idx)
    x = zero_one(data.x, low, high)
    held_out = f"/test{test_fraction!r}/{test_seed}" if test_fraction > 0 else ""  # none: the fingerprint as before
    split = hashlib.sha256(f"{data.fingerprint}/{val_fraction!r}/{seed}{held_out}".encode()).hexdigest()[:16]
    return Dataset(x=x, sample_ids=data.sample_ids, gene_names=data.gene_names, labels=data.labels,
                   fingerprint=f"{data.fingerprint}-split-{split}",
                   preprocessing={**data.preprocessing, "val_fraction": val_fraction, "split_seed": seed,
                                  **({"test_fraction": test_fraction} if test_fraction > 0 else {}),
                                  "n_fit_samples": len(train_idx)}, scaler={"low": low, "high": high})


# ---- the same preparation for a new matrix (a saved model, vaebench-embed) -----------------------------

LAYOUTS = {"table": "table", "h5ad": "h5ad", "xena": "xena", "tcga_pancan": "xena",
           "tcga_cohort": "xena"}  # data config name -> how its file is read (data=tybalt is named xena)


def recipe(cfg: Any, data: Dataset) -> dict[str, Any]:
    """What a saved model needs to prepare a new matrix as its training matrix was: how to read the file, the
    NaN policy, log1p, the genes in the model's input order, and each gene's scaler (minimum and maximum, as
    numpy arrays of the dtype they were applied in). cfg: the run's typed data config.

    The built-in synthetic matrix is generated already prepared, so its recipe takes a samples x genes table of
    prepared values (in [0, 1]) and only puts the genes in order."""
    if cfg.name == "synthetic":
        return {"layout": "table", "sample_id_length": None, "layer": None, "nan_policy": NanPolicy.error.value,
                "log1p": False, "genes": list(data.gene_names), "scaling": Scaling.none.value, "scaler": None}
    scaling = cfg.scaling.value
    if cfg.scaling is Scaling.zeroone and data.scaler is None:
        raise ValueError("the data set carries no scaler: it was loaded without its preparation")
    return {"layout": LAYOUTS[cfg.name], "sample_id_length": getattr(cfg, "sample_id_length", None),
            "layer": getattr(cfg, "layer", None), "nan_policy": cfg.nan_policy.value, "log1p": cfg.log1p,
            "genes": list(data.gene_names), "scaling": scaling,
            "scaler": data.scaler if cfg.scaling is Scaling.zeroone else None}


def prepare_like(how: dict[str, Any], src: Source) -> tuple[np.ndarray, list[str]]:
    """A new matrix read and prepared by a recipe (see `recipe`): float32 samples x the recipe's genes, in
    their order, and the sample ids. Genes the recipe does not use are ignored; a gene it needs and the file
    lacks is refused. The steps are training's (build), on the kept genes: NaN policy, log1p, scaling with
    the training matrix's per-gene minimum and maximum (values outside clipped to [0, 1])."""
    if how["layout"] == "xena":
        matrix = files.read_xena(src, how["sample_id_length"], sort_samples=False)
    elif how["layout"] == "h5ad":
        matrix = files.read_h5ad(src, how["layer"], None)
    else:
        matrix = files.read_table(src, None)
    files.require_unique_names(src, matrix)
    genes = how["genes"]
    at = {g: j for j, g in enumerate(matrix.gene_names)}
    missing = [g for g in genes if g not in at]
    if missing:
        raise src.refuse(f"lacks {len(missing)} of the model's {len(genes)} genes (first: '{missing[0]}')",
                         "the model reads every gene it was trained on, by the same name (symbol or id) as in "
                         "its training data: add the missing genes (zero if not measured, which biases the "
                         "embedding) or train on the genes both data sets share")
    kept = Matrix(values=matrix.values[:, [at[g] for g in genes]], sample_ids=matrix.sample_ids, gene_names=genes)
    fill_missing(kept, NanPolicy(how["nan_policy"]), src)
    if how["log1p"]:
        apply_log1p(kept, src)
    x = kept.values
    if how["scaling"] == Scaling.zeroone.value:
        low, high = how["scaler"]["low"], how["scaler"]["high"]
        x = zero_one(x.astype(low.dtype), low, high)  # float32 for scaler_fit=train: as the cached matrix was
    else:
        require_unit_range(x, src)
    return np.ascontiguousarray(x, dtype=np.float32), kept.sample_ids

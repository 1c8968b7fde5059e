"""How well the latent space separates known labels (e.g. cancer types), beside reconstruction.

The study ranked configurations by validation reconstruction loss alone; Eltager et al. (2023) found
that this does not reflect how well the latent space separates cancer types. After training, on the
latent means (mu) of the validation samples: k-means with k = number of labels against the labels
(adjusted Rand index, normalised mutual information), the silhouette of the labels, and a linear probe
(logistic regression fitted on the training samples' means; on validation its balanced accuracy, the recall of
each label and the lowest of them, which on imbalanced labels is the small label's).
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
from vaebench.models import BaseVAE
from vaebench.results import F, LATENT_SCORES as FIELDS

MIN_VAL_ROWS = 10  # below this, k-means and a probe score by chance: 2 rows of 2 labels give ARI 1.0
MIN_ROWS_PER_LABEL = 2  # a label seen once is its own cluster: one label per sample gives ARI 1.0


def latent_means(model: BaseVAE, x: torch.Tensor, batch_size: int) -> np.ndarray:
    return posterior(model, x, batch_size)[0]


def posterior(model: BaseVAE, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's posterior of each row, in eval mode: means and log-variances, float64 [rows, latent]."""
    model.eval()
    with torch.inference_mode():
        parts = [model.encode(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return tuple(torch.cat([p[k] for p in parts]).float().cpu().numpy().astype(np.float64) for k in (0, 1))


def too_few_rows(y_val: np.ndarray) -> Optional[str]:
    """Why the validation rows cannot give meaningful scores, in words; None when they can."""
    if len(y_val) < MIN_VAL_ROWS:
        return f"{len(y_val)} validation rows; the latent scores need at least {MIN_VAL_ROWS}"
    labels, counts = np.unique(y_val, return_counts=True)
    if len(labels) < 2:  # every sample of one label, or nearly: none other reached the validation rows
        return (f"all {len(y_val)} validation rows have one label ('{labels[0]}'); the latent scores compare two "
                f"or more: use labels that differ between samples")
    if counts.min() < MIN_ROWS_PER_LABEL:
        return (f"{int((counts < MIN_ROWS_PER_LABEL).sum())} of {len(labels)} labels have fewer than "
                f"{MIN_ROWS_PER_LABEL} validation rows (first: '{labels[counts.argmin()]}'); use more samples, "
                f"a larger trainer.val_fraction or coarser labels")
    return None


def label_scores(z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray,
                 seed: int) -> dict[str, Optional[float]]:
    """The scores (FIELDS) for latent points with known labels, and the probe's recall per label
    (latent_probe_recall); None where a score is undefined or where too_few_rows says the validation rows
    cannot carry it."""
    # Imported here: scikit-learn takes about a second to import, and only runs with labels pay for it.
    import sklearn.linear_model  # noqa: F401 - loads SciPy's BLAS: threadpool_limits limits loaded libraries only
    from threadpoolctl import threadpool_limits

    # SciPy's BLAS (the probe's L-BFGS) starts a thread per core in every process; in a sweep each worker has a
    # core and one torch thread, and two workers' idle BLAS threads spinning against each other made one call
    # ~10x slower on a busy 2-core machine. The job's torch thread count is its share of the cores, so its BLAS
    # gets as many. The scores came out the same with one and with two BLAS threads (tests/test_sweep_costs.py).
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        return _label_scores(z_train, y_train, z_val, y_val, seed)


def _label_scores(z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray,
                  seed: int) -> dict[str, Optional[float]]:
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, recall_score, silhouette_score
    from sklearn.preprocessing import StandardScaler

    scores: dict[str, Optional[float]] = dict.fromkeys(FIELDS)
    n_labels = len(np.unique(y_val))
    if n_labels < 2 or too_few_rows(y_val) or not (np.isfinite(z_train).all() and np.isfinite(z_val).all()):
        return scores
    # Expected, not news, on collapsed or barely trained runs: k-means on a collapsed latent space finds fewer
    # distinct clusters than labels, and the probe's fixed budget of iterations may end before lbfgs converges.
    # The scores still measure what they say; the warnings were noise in every sweep's output.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # a small validation set may lack a class the probe predicts
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        clusters = KMeans(n_clusters=n_labels, n_init=4, random_state=seed).fit_predict(z_val)
        scores[F.latent_ari] = float(adjusted_rand_score(y_val, clusters))
        scores[F.latent_nmi] = float(normalized_mutual_info_score(y_val, clusters))
        if n_labels < len(y_val):
            scores[F.latent_silhouette] = float(silhouette_score(z_val, y_val))
        if len(np.unique(y_train)) >= 2:
            scaler = StandardScaler().fit(z_train)  # latent scales differ by orders of magnitude between runs
            probe = LogisticRegression(max_iter=500).fit(scaler.transform(z_train), y_train)
            labels = np.unique(y_val)  # recall of the labels the validation rows hold (a probe class may be absent)
            recall = recall_score(y_val, probe.predict(scaler.transform(z_val)), labels=labels, average=None,
                                  zero_division=0)
            scores[F.latent_probe_balanced_accuracy] = float(recall.mean())  # = balanced_accuracy_score
            scores[F.latent_probe_min_recall] = float(recall.min())
            scores[F.latent_probe_recall] = {str(label): float(r) for label, r in zip(labels, recall)}
    return scores

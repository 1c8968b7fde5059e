"""What a run is compared with, on its own train/validation split: did the model learn anything?

- Predicting each gene's training mean: a model whose posterior collapsed (q(z|x) = p(z)) can at best
  decode this, so val_recon_mse / baseline_mean_mse (`recon_vs_mean`) near 1 means nothing was learned.
- PCA with k = latent_dim components, fitted on the training rows: the linear model with the same latent
  size, the bar a VAE's reconstruction should approach.
- The same latent scores for PCA and for the untrained network (same seed, same size): how much of a
  latent score is structure already in the data, not learning.
- Posterior collapse diagnostics of the trained encoder: active units (Burda et al. 2016) and KL per dim.

Baselines depend only on the data, the split, k (and the seed, for the untrained network), so each worker
process keeps them: a sweep pays once per split and latent size, not once per run.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from vaebench.latent import label_scores, latent_means, posterior, too_few_rows
from vaebench.likelihood import importance_sampled_nll, no_likelihood_reason, ppca_nll
from vaebench.models import BaseVAE, ModelConfig, build_model
from vaebench.models.base import kl_per_dim
from vaebench.results import LATENT_SCORES, F, latent_field
from vaebench.train import evaluate

ACTIVE_UNIT_VARIANCE = 0.01  # Burda et al. 2016: a unit is active when Var_x E_q[z_d | x] > 0.01
COLLAPSED_RATIO = 0.98  # recon_vs_mean at or above this: no better than the mean predictor, within noise
# kl_units_90: the dims that carry this share of the KL. Active units count every dim whose posterior mean
# varies, which under a weak decoder includes dims carrying 0.02-0.07 nats: the KL share counts information.
KL_SHARE = 0.9
KL_NONE = 1.0  # nats per sample: below this the posterior carries too little to tell three groups apart (log 3),
# so no dim counts as carrying information (its 90 % would be spread over noise-level dims)

_cache: dict[tuple, Any] = {}


def split_key(fingerprint: str, train_idx: np.ndarray, val_idx: np.ndarray) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    digest.update(np.ascontiguousarray(train_idx).tobytes())
    digest.update(np.ascontiguousarray(val_idx).tobytes())
    return digest.hexdigest()[:16]


def cached(key: tuple, compute):
    """compute(), once per process for each key: what depends only on the data and its split (baselines, the
    decoder variance's start) is computed by a sweep worker's first job of that split and kept for the rest."""
    if key not in _cache:
        _cache[key] = compute()
    return _cache[key]


def mean_predictor_mse(x: torch.Tensor, train_idx: np.ndarray, val_idx: np.ndarray) -> float:
    """MSE on the validation rows of predicting each gene's mean over the training rows."""
    gene_means = x[_rows(x, train_idx)].double().mean(0)
    return float((x[_rows(x, val_idx)].double() - gene_means).pow(2).mean())


@dataclass
class PCA:
    """Principal components of the training rows: their mean and the top k directions ([F], [F, k]), with the
    k eigenvalues of the covariance and its trace (probabilistic PCA's likelihood needs them)."""
    mean: torch.Tensor
    components: torch.Tensor
    eigenvalues: torch.Tensor
    total_variance: float

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.components

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.components.T + self.mean


def fit_pca(x: torch.Tensor, train_idx: np.ndarray, k: int, seed: int = 0) -> Optional[PCA]:
    """PCA with k components fitted on the training rows, or None when k >= min(rows, genes) (nothing to reduce).

    A randomized SVD (Halko et al.; torch.svd_lowrank with 10 extra directions and 4 power iterations) on the
    matrix where it lives: exact when the centred rows have rank <= k + 10, otherwise within a fraction of a
    percent of the optimal error for expression data's quickly falling spectrum, and a few percent of a
    training run's time at the study's size, where an exact SVD of 9,900 x 5,000 would cost more than the run.
    """
    n, f = len(train_idx), x.shape[1]
    if k >= min(n, f):
        return None
    rows = x[_rows(x, train_idx)].float()
    mean = rows.mean(0)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):  # leaves the run's RNG alone
        torch.manual_seed(seed)
        _, s, v = torch.svd_lowrank(rows - mean, q=min(k + 10, n, f), niter=4)
    total = float((rows.double() - mean.double()).pow(2).sum()) / n
    return PCA(mean=mean, components=v[:, :k].contiguous(), eigenvalues=s[:k].double().pow(2) / n,
               total_variance=total)


def pca_note(k: int, n_train: int, n_genes: int) -> str:
    """Why fit_pca gave no PCA, in words (the result's pca_note)."""
    return (f"PCA with k = latent_dim = {k} needs k below the {n_genes} genes and the {n_train} training rows; "
            f"a smaller latent_dim has a PCA baseline")


def pca_mse(pca: Optional[PCA], x: torch.Tensor, val_idx: np.ndarray) -> Optional[float]:
    if pca is None:
        return None
    x_val = x[_rows(x, val_idx)].float()
    return float((pca.inverse_transform(pca.transform(x_val)) - x_val).double().pow(2).mean())


def _rows(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(idx, device=x.device)


def units_carrying(kl: torch.Tensor, share: float = KL_SHARE) -> int:
    """The fewest latent dims whose KL adds up to `share` of the total (0 when the total is below KL_NONE)."""
    total = float(kl.sum())
    if total < KL_NONE:
        return 0
    cumulative = torch.cumsum(torch.sort(kl, descending=True).values, 0)
    return int((cumulative < share * total).sum()) + 1


def posterior_diagnostics(mu_val: np.ndarray, log_var_val: np.ndarray) -> dict[str, Any]:
    """Active units, the dims carrying 90 % of the KL, KL per latent dim (nats, mean over rows) and their sum,
    from the validation rows' posterior (vaebench.latent.posterior)."""
    mu, log_var = torch.from_numpy(mu_val), torch.from_numpy(log_var_val)
    kl = kl_per_dim(mu, log_var).mean(0)
    active = int((mu.var(0) > ACTIVE_UNIT_VARIANCE).sum()) if len(mu) > 1 else None
    return {F.active_units: active, F.kl_units_90: units_carrying(kl), F.kl_per_dim: [round(v, 6) for v in kl.tolist()],
            F.val_kl: float(kl.sum())}


def collapse(recon_vs_mean: Optional[float], active_units: Optional[int],
             kl_units: Optional[int] = None, latent_dim: Optional[int] = None) -> tuple[bool, Optional[str]]:
    """Whether a run learned nothing, and why, in words (with how many dims carry its information)."""
    reasons = []
    if recon_vs_mean is not None and recon_vs_mean >= COLLAPSED_RATIO:
        reasons.append(f"reconstruction {recon_vs_mean:.2f}x the per-gene-mean predictor")
    if active_units == 0:
        reasons.append("no active latent unit (posterior collapse)")
    if reasons and kl_units == 0:
        reasons.append(f"no latent dim carries information (KL < {KL_NONE:g} nat per sample)")
    elif reasons and kl_units is not None and latent_dim is not None:
        reasons.append(f"90 % of the KL in {kl_units} of {latent_dim} latent dims")
    return bool(reasons), ("; ".join(reasons) or None)


def assess(model: BaseVAE, model_cfg: ModelConfig, x: torch.Tensor, labels: Optional[list[str]],
           split: str, train_idx: np.ndarray, val_idx: np.ndarray, val_recon_mse: float, batch_size: int,
           seed: int, latent_scores: bool, nll_samples: int) -> dict[str, Any]:
    """Every number that says whether a trained run learned: baselines, collapse, held-out likelihoods, latent
    scores beside their references. The result fields, by name. split: split_key of the data and the rows."""
    started = time.perf_counter()
    k = model.latent_dim
    mean_mse = cached(("mean", split), lambda: mean_predictor_mse(x, train_idx, val_idx))
    pca = cached(("pca", split, k), lambda: fit_pca(x, train_idx, k))
    pca_err = cached(("pca_mse", split, k), lambda: pca_mse(pca, x, val_idx))
    out: dict[str, Any] = {F.baseline_mean_mse: mean_mse, F.baseline_pca_mse: pca_err, F.pca_note: pca_note(
                               k, len(train_idx), x.shape[1]) if pca is None else None,
                           F.recon_vs_mean: val_recon_mse / mean_mse if mean_mse > 0 else None,
                           F.recon_vs_pca: val_recon_mse / pca_err if pca_err else None}
    # The validation rows' posterior, encoded once for the collapse diagnostics and the latent scores (the same
    # batches as each encoded them before, so the same numbers). The likelihood encodes them again in its own
    # chunks of rows: shared, its draws would start from means computed in other batches, which may differ in the
    # last bit; that encoding is 1/(K + 1) of the likelihood's work.
    val_posterior = posterior(model, x[_rows(x, val_idx)], batch_size)
    out.update(posterior_diagnostics(*val_posterior))
    out[F.collapsed], out[F.collapse_reason] = collapse(out[F.recon_vs_mean], out[F.active_units],
                                                        out[F.kl_units_90], k)
    out[F.baseline_seconds] = round(time.perf_counter() - started, 3)
    out.update(likelihood_scores(model, x, pca, split, val_idx, nll_samples, batch_size, seed))
    if latent_scores and labels is not None:
        out.update(latent_scores_with_references(model, model_cfg, x, labels, split, pca, train_idx, val_idx,
                                                 batch_size, seed, val_means=val_posterior[0]))
    return out


def likelihood_scores(model: BaseVAE, x: torch.Tensor, pca: Optional[PCA], split: str, idx: np.ndarray,
                      nll_samples: int, batch_size: int, seed: int, test: bool = False) -> dict[str, Any]:
    """Held-out negative log-likelihoods per gene of the model (importance-sampled) and of probabilistic PCA
    with k = latent_dim on the rows idx (the validation rows, or the test rows); null with a reason."""
    started = time.perf_counter()
    rows = x[_rows(x, idx)]

    def of_ppca() -> Optional[float]:
        nll = None if pca is None else ppca_nll(pca.mean, pca.components, pca.eigenvalues, pca.total_variance, rows)
        return nll if nll is not None and math.isfinite(nll) else None

    ppca = cached(("ppca", split, test, model.latent_dim), of_ppca)
    note = no_likelihood_reason(model) or (None if nll_samples else "trainer.nll_samples=0: not estimated")
    nll = None if note else importance_sampled_nll(model, rows, nll_samples, batch_size, seed)
    nll = nll if nll is not None and math.isfinite(nll) else None
    if test:
        return {F.test_nll_is: nll, F.test_baseline_ppca_nll: ppca}
    return {F.val_nll_is: nll, F.baseline_ppca_nll: ppca, F.nll_vs_ppca: None if nll is None or ppca is None
            else nll - ppca, F.nll_note: note, F.nll_is_samples: nll_samples if nll is not None else None,
            F.decoder_variance: float(model.variance().detach().mean()) if model.variance is not None else None,
            F.nll_seconds: round(time.perf_counter() - started, 3)}


def held_out_scores(model: BaseVAE, x: torch.Tensor, split: str, train_idx: np.ndarray, test_idx: np.ndarray,
                    batch_size: int, kld_weight: float, amp: bool, nll_samples: int, seed: int) -> dict[str, Any]:
    """The trained model and the mean predictor (and probabilistic PCA's likelihood) on the test rows, measured
    as on the validation rows; the model is left in eval mode. split: split_key of the data and the rows."""
    test_mse = evaluate(model, x[_rows(x, test_idx)], batch_size, kld_weight, amp, prefix="test_")[F.test_recon_mse]
    model.eval()
    mean_mse = mean_predictor_mse(x, train_idx, test_idx)
    pca = cached(("pca", split, model.latent_dim), lambda: fit_pca(x, train_idx, model.latent_dim))
    return {F.test_recon_mse: test_mse, F.test_baseline_mean_mse: mean_mse,
            F.test_recon_vs_mean: test_mse / mean_mse if mean_mse > 0 else None,
            **likelihood_scores(model, x, pca, split, test_idx, nll_samples, batch_size, seed, test=True)}


def latent_scores_with_references(model: BaseVAE, model_cfg: ModelConfig, x: torch.Tensor, labels: list[str],
                                  split: str, pca: Optional[PCA], train_idx: np.ndarray, val_idx: np.ndarray,
                                  batch_size: int, seed: int, val_means: Optional[np.ndarray] = None
                                  ) -> dict[str, Any]:
    """The latent scores of the trained model, of the untrained network with the same seed and size, and of
    PCA with k = latent_dim; the references cached per split, size (and seed). val_means: the trained model's
    latent means of the validation rows, when the caller has them (latent_means, the same batches)."""
    started = time.perf_counter()
    y = np.asarray(labels)
    rows_train = torch.as_tensor(train_idx, device=x.device)
    rows_val = torch.as_tensor(val_idx, device=x.device)

    def scores_of(encoder: BaseVAE, z_val: Optional[np.ndarray] = None) -> dict[str, Optional[float]]:
        return label_scores(latent_means(encoder, x[rows_train], batch_size), y[train_idx],
                            latent_means(encoder, x[rows_val], batch_size) if z_val is None else z_val, y[val_idx],
                            seed)

    def untrained() -> dict[str, Optional[float]]:
        torch.manual_seed(seed)  # as fit() does before building: the very weights training started from
        return scores_of(build_model(model_cfg, x.shape[1], model.latent_dim).to(x.device))

    def of_pca() -> dict[str, Optional[float]]:
        if pca is None:
            return dict.fromkeys(LATENT_SCORES)
        def z(rows: torch.Tensor) -> np.ndarray:
            return pca.transform(x[rows].float()).double().cpu().numpy()

        return label_scores(z(rows_train), y[train_idx], z(rows_val), y[val_idx], seed)

    out: dict[str, Any] = dict(scores_of(model, val_means))
    refs = {"untrained": cached(("untrained", split, model.latent_dim, seed, tuple(model_cfg.hidden_dims)), untrained),
            "pca": cached(("pca_scores", split, model.latent_dim), of_pca)}
    for reference, scores in refs.items():
        out.update({latent_field(score, reference): scores[score] for score in LATENT_SCORES})
    out[F.latent_seconds] = round(time.perf_counter() - started, 3)
    out[F.latent_note] = too_few_rows(y[val_idx])  # why the scores are null, when the rows are too few
    return out
